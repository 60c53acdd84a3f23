package main

import (
	"bufio"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// shell is "echoserver sh": the image has no shell, so the exec tests run
// this one. It says whether its input is a terminal and the terminal's
// size ("tty=true size=80x24"), then reads lines: "size" prints the size,
// "env NAME" a variable, "pwd" and "id" where and who it runs as,
// "exit N" exits with N, and anything else comes back as "echo: LINE".
// A window size change prints "winch COLSxROWS" as it happens. At end of
// input it prints "eof" and exits 0. Standard error gets "err: LINE" for
// lines that start with "err ".
func shell() int {
	winch := make(chan os.Signal, 4)
	signal.Notify(winch, syscall.SIGWINCH)
	go func() {
		for range winch {
			fmt.Printf("winch %s\n", winsize())
		}
	}()
	fmt.Printf("tty=%v size=%s\n", isTerminal(0), winsize())
	sc := bufio.NewScanner(os.Stdin)
	for {
		fmt.Print("> ")
		if !sc.Scan() {
			fmt.Println("eof")
			return 0
		}
		line := strings.TrimRight(sc.Text(), "\r")
		switch {
		case line == "size":
			fmt.Printf("size %s\n", winsize())
		case line == "pwd":
			wd, _ := os.Getwd()
			fmt.Printf("pwd %s\n", wd)
		case line == "id":
			fmt.Printf("uid %d\n", os.Getuid())
		case strings.HasPrefix(line, "env "):
			fmt.Printf("env %s=%s\n", line[4:], os.Getenv(line[4:]))
		case strings.HasPrefix(line, "err "):
			fmt.Fprintf(os.Stderr, "err: %s\n", line[4:])
		case strings.HasPrefix(line, "exit "):
			code, _ := strconv.Atoi(strings.TrimSpace(line[5:]))
			return code
		default:
			fmt.Printf("echo: %s\n", line)
		}
	}
}

// isTerminal asks the kernel for fd's terminal settings, which only a
// terminal has.
func isTerminal(fd uintptr) bool {
	var t syscall.Termios
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TCGETS, uintptr(unsafe.Pointer(&t)))
	return errno == 0
}

// winsize is the terminal's size as COLSxROWS, or "none".
func winsize() string {
	var ws struct{ Row, Col, X, Y uint16 }
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, 0, syscall.TIOCGWINSZ, uintptr(unsafe.Pointer(&ws)))
	if errno != 0 {
		return "none"
	}
	return fmt.Sprintf("%dx%d", ws.Col, ws.Row)
}
