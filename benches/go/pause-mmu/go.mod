module pausemmu

go 1.19
