package lab

// NamePrefixForTest exposes labPrefix to the external tests.
func NamePrefixForTest(pid int, tag string) string { return labPrefix(pid, tag) }
