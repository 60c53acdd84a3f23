package lab

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Namespace names look like "ul" + pid (base 36, 5 digits) + tag (2 random
// base-36 digits) + "-" + role, for example "ul00ab3k7-h1". Encoding the pid
// lets a later run tell a leftover (its creator is dead) from a lab that
// another test binary running right now (go test runs packages in parallel)
// is still using: a sweep by age alone would destroy a sibling's lab.
const (
	namePrefix  = "ul"
	pidDigits   = 5
	tagDigits   = 2
	maxRoleLen  = 5 // 2+5+2+1+5 = 15
	netnsRunDir = "/run/netns"
	// labDirParent holds each lab's directory, /tmp/<prefix>.
	labDirParent = "/tmp"
)

var dirRE = regexp.MustCompile(`^ul([0-9a-z]{5})[0-9a-z]{2}$`)

var nameRE = regexp.MustCompile(`^ul([0-9a-z]{5})([0-9a-z]{2})-([0-9a-z]{1,5})$`)

// labPrefix returns the "ul<pid><tag>" part shared by all of one lab's names.
func labPrefix(pid int, tag string) string {
	p := strconv.FormatInt(int64(pid), 36)
	if len(p) < pidDigits {
		p = strings.Repeat("0", pidDigits-len(p)) + p
	}
	return namePrefix + p + tag
}

// randomTag returns tagDigits random base-36 digits.
func randomTag() (string, error) {
	const digits = "0123456789abcdefghijklmnopqrstuvwxyz"
	var b [tagDigits]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random lab tag: %w", err)
	}
	for i := range b {
		b[i] = digits[int(b[i])%len(digits)]
	}
	return string(b[:]), nil
}

// validRole checks a host or router name: it becomes part of namespace names.
func validRole(role string) error {
	if len(role) == 0 || len(role) > maxRoleLen {
		return fmt.Errorf("name %q: want 1 to %d characters", role, maxRoleLen)
	}
	for _, c := range role {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return fmt.Errorf("name %q: want only a-z and 0-9", role)
		}
	}
	return nil
}

// Sweep deletes the namespaces and directories of earlier labs whose
// creating process is gone (or whose pid now belongs to a process started
// after the namespace was made, i.e. the pid was reused), killing whatever
// still runs inside them. It returns the names it deleted. Names that do not
// match the lab's pattern are never touched, so other people's namespaces on
// a shared machine are safe.
func Sweep(ctx context.Context) ([]string, error) {
	deleted, err := sweepNamespaces(ctx)
	sweepDirs()
	return deleted, err
}

// sweepDirs removes the directories of dead labs; failures only waste disk.
func sweepDirs() {
	entries, err := os.ReadDir(labDirParent)
	if err != nil {
		return
	}
	for _, e := range entries {
		m := dirRE.FindStringSubmatch(e.Name())
		if m == nil || !e.IsDir() {
			continue
		}
		pid, err := strconv.ParseInt(m[1], 36, 64)
		if err != nil {
			continue
		}
		dir := filepath.Join(labDirParent, e.Name())
		if !creatorAlive(int(pid), dir) {
			_ = os.RemoveAll(dir)
		}
	}
}

func sweepNamespaces(ctx context.Context) ([]string, error) {
	entries, err := os.ReadDir(netnsRunDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sweep: list %s: %w", netnsRunDir, err)
	}
	var deleted []string
	var errs []error
	for _, e := range entries {
		m := nameRE.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.ParseInt(m[1], 36, 64)
		if err != nil {
			continue
		}
		nsPath := filepath.Join(netnsRunDir, e.Name())
		if creatorAlive(int(pid), nsPath) {
			continue
		}
		if err := deleteNetns(ctx, e.Name()); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, e.Name())
	}
	return deleted, errors.Join(errs...)
}

// creatorAlive reports whether pid is alive and was started before path
// (a namespace file or a lab directory) was last modified.
func creatorAlive(pid int, nsPath string) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	started, err := processStart(pid)
	if err != nil {
		return false // vanished between the two checks
	}
	fi, err := os.Stat(nsPath)
	if err != nil {
		return true // cannot tell; leave it alone
	}
	// Allow some slack: clock ticks are coarse (10 ms).
	return !started.After(fi.ModTime().Add(time.Second))
}

// processStart returns when pid started, from /proc/PID/stat field 22 (in
// clock ticks since boot) and the boot time in /proc/stat.
func processStart(pid int) (time.Time, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return time.Time{}, fmt.Errorf("read stat of pid %d: %w", pid, err)
	}
	// The command name (field 2) may contain spaces and parentheses; the
	// remaining fields start after the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return time.Time{}, fmt.Errorf("parse stat of pid %d: no ')'", pid)
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is field 3 (state); starttime is field 22.
	if len(fields) < 20 {
		return time.Time{}, fmt.Errorf("parse stat of pid %d: %d fields", pid, len(fields))
	}
	ticks, err := strconv.ParseInt(fields[19], 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("parse starttime of pid %d: %w", pid, err)
	}
	boot, err := bootTime()
	if err != nil {
		return time.Time{}, err
	}
	const clkTck = 100 // USER_HZ is 100 on every Linux ABI Go supports
	return boot.Add(time.Duration(ticks) * time.Second / clkTck), nil
}

func bootTime() (time.Time, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, fmt.Errorf("read /proc/stat: %w", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			sec, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("parse btime %q: %w", v, err)
			}
			return time.Unix(sec, 0), nil
		}
	}
	return time.Time{}, errors.New("no btime in /proc/stat")
}
