package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// What machine add/init upload: the binary matching the host's
// `uname -sm`, from a release folder or the running binary itself.

// sshTargetURL turns machine add's HOST argument ([user@]host[:port], an
// ~/.ssh/config alias, or an ssh:// URL) and -p into the ssh:// form the
// api's SSH dialer reads. A port given twice must agree.
func sshTargetURL(arg string, port uint16) (string, error) {
	if arg == "" {
		return "", errors.New("no host given")
	}
	u := &url.URL{Scheme: "ssh"}
	if strings.HasPrefix(arg, "ssh://") {
		p, err := url.Parse(arg)
		if err != nil {
			return "", fmt.Errorf("host %q: %w", arg, err)
		}
		if (p.Path != "" && p.Path != "/") || p.RawQuery != "" {
			return "", fmt.Errorf("host %q: want ssh://[user@]host[:port] with no path", arg)
		}
		u.User, u.Host = p.User, p.Host
	} else {
		hostPort := arg
		if i := strings.LastIndexByte(arg, '@'); i >= 0 {
			if i == 0 {
				return "", fmt.Errorf("host %q: empty user", arg)
			}
			u.User, hostPort = url.User(arg[:i]), arg[i+1:]
		}
		if strings.Count(hostPort, ":") > 1 && !strings.HasPrefix(hostPort, "[") {
			hostPort = "[" + hostPort + "]" // a bare IPv6 address
		}
		u.Host = hostPort
	}
	host, p := u.Hostname(), u.Port()
	if host == "" || strings.ContainsAny(host, "/ ") {
		return "", fmt.Errorf("host %q: no valid host name", arg)
	}
	if p != "" {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return "", fmt.Errorf("host %q: bad port %q", arg, p)
		}
	}
	if port != 0 {
		if p != "" && p != strconv.Itoa(int(port)) {
			return "", fmt.Errorf("host %q names port %s but -p says %d", arg, p, port)
		}
		p = strconv.Itoa(int(port))
	}
	u.Host = host
	if strings.Contains(host, ":") {
		u.Host = "[" + host + "]"
	}
	if p != "" {
		u.Host = net.JoinHostPort(host, p)
	}
	return u.String(), nil
}

// goArch maps `uname -sm` output to the GOARCH of the release binary that
// runs there. armv6 (a Pi Zero or Pi 1) has no release binary.
func goArch(unameSM string) (string, error) {
	f := strings.Fields(unameSM)
	if len(f) != 2 {
		return "", fmt.Errorf("uname -sm said %q, want the OS and the machine", unameSM)
	}
	if f[0] != "Linux" {
		return "", fmt.Errorf("the host runs %s: uncloud runs on Linux only", f[0])
	}
	switch f[1] {
	case "x86_64", "amd64":
		return "amd64", nil
	case "aarch64", "arm64":
		return "arm64", nil
	case "armv7l", "armv8l": // armv8l: a 64-bit CPU under a 32-bit OS
		return "arm", nil
	}
	return "", fmt.Errorf("no uncloud build for %s machines (release builds: x86_64, aarch64, armv7l)", f[1])
}

// localBinary is a binary to upload: where it is, its size and SHA-256.
type localBinary struct {
	Path   string
	Size   int64
	SHA256 string
}

// releaseFileName is scripts/release's name for goarch's binary.
func releaseFileName(goarch string) string { return "uncloud-linux-" + goarch }

// pickBinary chooses the binary for a host of goarch: from releaseDir
// (checked against its SHA256SUMS) when given, else self (the running
// binary, built for selfArch) when it matches.
func pickBinary(goarch, releaseDir, self, selfArch string) (localBinary, error) {
	if releaseDir == "" {
		if goarch != selfArch {
			return localBinary{}, fmt.Errorf("the host is linux/%s but this uncloud is linux/%s: pass --release-dir DIR with %s in it (scripts/release builds it)",
				goarch, selfArch, releaseFileName(goarch))
		}
		return hashFile(self)
	}
	name := releaseFileName(goarch)
	path := filepath.Join(releaseDir, name)
	b, err := hashFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return localBinary{}, fmt.Errorf("the host is linux/%s but %s is missing (scripts/release builds it)", goarch, path)
	}
	if err != nil {
		return localBinary{}, err
	}
	want, err := releaseSum(filepath.Join(releaseDir, "SHA256SUMS"), name)
	if err != nil {
		return localBinary{}, err
	}
	if want != b.SHA256 {
		return localBinary{}, fmt.Errorf("%s has SHA-256 %s but SHA256SUMS says %s: refusing a damaged or swapped binary", path, b.SHA256, want)
	}
	return b, nil
}

// releaseSum finds name's line in a sha256sum-format file.
func releaseSum(sumsPath, name string) (string, error) {
	f, err := os.Open(sumsPath)
	if err != nil {
		return "", fmt.Errorf("release checksums: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 2 && strings.TrimPrefix(fields[1], "*") == name {
			if _, err := hex.DecodeString(fields[0]); err != nil || len(fields[0]) != 64 {
				return "", fmt.Errorf("%s: bad checksum for %s", sumsPath, name)
			}
			return strings.ToLower(fields[0]), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read %s: %w", sumsPath, err)
	}
	return "", fmt.Errorf("%s lists no %s", sumsPath, name)
}

func hashFile(path string) (localBinary, error) {
	f, err := os.Open(path)
	if err != nil {
		return localBinary{}, fmt.Errorf("binary to upload: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return localBinary{}, fmt.Errorf("read %s: %w", path, err)
	}
	return localBinary{Path: path, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// selfArch is the running binary's GOARCH (its OS is Linux: the only
// one uncloud builds for).
func selfArch() string { return runtime.GOARCH }
