package e2e

import (
	"fmt"
	"strconv"
)

func itoa(n int) string { return strconv.Itoa(n) }

func fmtf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
