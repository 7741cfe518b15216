module stuck

go 1.19
