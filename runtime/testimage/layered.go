package testimage

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/docker/docker/client"
)

// Layer is a layer of a Layered image: one file of Size pseudo-random
// bytes drawn from Seed. Random bytes do not compress, so a layer costs
// about Size on the wire however it is sent; the same seed and size give
// the same layer (same digest) in every image that has it.
type Layer struct {
	Name string
	Size int
	Seed uint64
}

// Layered writes a `docker load` tarball of an image named tag for arch
// (e.g. "amd64", "arm64"; os linux) whose layers are layers, bottom first,
// and returns its image ID (its config's digest). Two images that share
// their lower layers share those layers' digests, as images built from a
// common base do.
func Layered(w io.Writer, tag, arch string, layers []Layer) (string, error) {
	tw := tar.NewWriter(w)
	epoch := time.Unix(0, 0)
	var diffIDs, paths []string
	for i, l := range layers {
		var buf bytes.Buffer
		lt := tar.NewWriter(&buf)
		if err := lt.WriteHeader(&tar.Header{Name: l.Name, Mode: 0o644, Size: int64(l.Size), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
			return "", err
		}
		rng := rand.NewChaCha8(seed(l.Seed))
		if _, err := io.CopyN(lt, rng, int64(l.Size)); err != nil {
			return "", err
		}
		if err := lt.Close(); err != nil {
			return "", err
		}
		sum := sha256.Sum256(buf.Bytes())
		diffIDs = append(diffIDs, "sha256:"+hex.EncodeToString(sum[:]))
		p := fmt.Sprintf("layer%d/layer.tar", i)
		paths = append(paths, p)
		if err := writeFile(tw, p, buf.Bytes()); err != nil {
			return "", err
		}
	}
	history := make([]map[string]string, len(layers))
	for i, l := range layers {
		history[i] = map[string]string{"created": epoch.UTC().Format(time.RFC3339), "created_by": "testimage layer " + l.Name}
	}
	config, err := json.Marshal(map[string]any{
		"architecture": arch,
		"os":           "linux",
		"created":      epoch.UTC().Format(time.RFC3339),
		"config":       map[string]any{"Cmd": []string{"/" + layers[len(layers)-1].Name}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
		"history":      history,
	})
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(config)
	id := hex.EncodeToString(sum[:])
	if err := writeFile(tw, id+".json", config); err != nil {
		return "", err
	}
	manifest, err := json.Marshal([]map[string]any{{"Config": id + ".json", "RepoTags": []string{tag}, "Layers": paths}})
	if err != nil {
		return "", err
	}
	if err := writeFile(tw, "manifest.json", manifest); err != nil {
		return "", err
	}
	return "sha256:" + id, tw.Close()
}

func seed(s uint64) [32]byte {
	var b [32]byte
	for i := range 8 {
		b[i] = byte(s >> (8 * i))
	}
	b[31] = 0x5e
	return b
}

func writeFile(tw *tar.Writer, name string, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

// LoadLayered builds a Layered image and loads it into c.
func LoadLayered(ctx context.Context, c *client.Client, tag, arch string, layers []Layer) (string, error) {
	pr, pw := io.Pipe()
	idc := make(chan string, 1)
	go func() {
		id, err := Layered(pw, tag, arch, layers)
		idc <- id
		pw.CloseWithError(err)
	}()
	resp, err := c.ImageLoad(ctx, pr, client.ImageLoadWithQuiet(true))
	if err != nil {
		pr.CloseWithError(err)
		<-idc
		return "", fmt.Errorf("load %s: %w", tag, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	id := <-idc
	if bytes.Contains(out, []byte(`"error"`)) {
		return "", fmt.Errorf("load %s: %s", tag, out)
	}
	return id, nil
}
