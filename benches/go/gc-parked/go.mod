module gcparked

go 1.19
