// Package testimage builds the runtime tests' container image without a
// registry: the echoserver compiled statically, in a one-file tarball
// imported into Docker.
package testimage

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
)

// Tag is the image name the tests use.
const Tag = "uncloud-test/echo:1"

// BuildBinary compiles the echoserver (CGO_ENABLED=0) into dir.
func BuildBinary(ctx context.Context, dir string) (string, error) {
	_, self, _, _ := goruntime.Caller(0)
	src := filepath.Join(filepath.Dir(self), "echoserver")
	out := filepath.Join(dir, "echoserver")
	goBin := filepath.Join(goruntime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-o", out, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build echoserver: %w: %s", err, b)
	}
	return out, nil
}

// Tarball is a root file system holding only the binary at /echoserver.
func Tarball(binary string) ([]byte, error) {
	b, err := os.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "echoserver", Mode: 0o755, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(b); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// FileTarball is a root file system holding one file, /content, whose
// bytes make the image's ID: tests make as many distinct images as they
// need with it.
func FileTarball(content string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "content", Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg})
	tw.Write([]byte(content))
	tw.Close()
	return buf.Bytes()
}

// Import loads the tarball into Docker as tag, with /echoserver as its
// entrypoint.
func Import(ctx context.Context, c *client.Client, tarball []byte, tag string) error {
	rc, err := c.ImageImport(ctx, image.ImportSource{Source: bytes.NewReader(tarball), SourceName: "-"}, tag,
		image.ImportOptions{Changes: []string{`ENTRYPOINT ["/echoserver"]`, `EXPOSE 8080`}})
	if err != nil {
		return fmt.Errorf("import %s: %w", tag, err)
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc)
	return err
}

// Build compiles the server and imports it into Docker as Tag.
func Build(ctx context.Context, c *client.Client) error {
	dir, err := os.MkdirTemp("", "uncloud-testimage")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin, err := BuildBinary(ctx, dir)
	if err != nil {
		return err
	}
	tb, err := Tarball(bin)
	if err != nil {
		return err
	}
	return Import(ctx, c, tb, Tag)
}
