package oci

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func newRegistry(t *testing.T) (*Registry, *httptest.Server) {
	t.Helper()
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := New(s, 1<<20)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return r, srv
}

// clientUpload pushes blob into repo as a client would (POST, PATCH, PUT).
func clientUpload(t *testing.T, base, repo string, blob []byte) int {
	t.Helper()
	resp, err := http.Post(base+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return resp.StatusCode
	}
	loc := base + resp.Header.Get("Location")
	req, _ := http.NewRequest(http.MethodPatch, loc, bytes.NewReader(blob))
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	req, _ = http.NewRequest(http.MethodPut, loc+"?digest="+digestOf(blob), nil)
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestRegistrySessionsAndFetchThrough(t *testing.T) {
	ctx := context.Background()
	src, srcURL := newRegistry(t)
	push, err := src.Open(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	blob := randomBytes(t, 300_000)
	d := digestOf(blob)

	// Only open sessions' repositories answer.
	if code := clientUpload(t, srcURL.URL, RepoPrefix+"guess", blob); code != http.StatusNotFound {
		t.Fatalf("upload to a repository of no session: %d, want 404", code)
	}
	if code := clientUpload(t, srcURL.URL, push.Repo, blob); code != http.StatusCreated {
		t.Fatalf("upload: %d", code)
	}
	if !src.Store().Has(d) {
		t.Fatal("the uploaded blob is not in the store")
	}
	if code := clientUpload(t, srcURL.URL, push.Repo, randomBytes(t, 2<<20)); code == http.StatusCreated {
		t.Fatal("a blob over the registry's bound was taken")
	}
	resp, err := http.Head(srcURL.URL + "/v2/" + push.Repo + "/blobs/" + d)
	if err != nil || resp.StatusCode != 200 || resp.ContentLength != int64(len(blob)) {
		t.Fatalf("HEAD: %v %v", resp, err)
	}

	// A target fetches through from the source's store, and only the
	// blobs its manifest names.
	dst, dstURL := newRegistry(t)
	var asked []string
	fetch := func(ctx context.Context, digest string) (io.ReadCloser, error) {
		asked = append(asked, digest)
		return src.Store().Open(digest)
	}
	other := digestOf([]byte("not in the manifest"))
	pull, err := dst.Open(fetch, map[string]int64{d: int64(len(blob))})
	if err != nil {
		t.Fatal(err)
	}
	get := func(digest string) (int, []byte) {
		resp, err := http.Get(dstURL.URL + "/v2/" + pull.Repo + "/blobs/" + digest)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, _ := get(other); code != http.StatusNotFound {
		t.Fatalf("GET of a blob the manifest does not name: %d", code)
	}
	code, got := get(d)
	if code != 200 || !bytes.Equal(got, blob) {
		t.Fatalf("GET through: %d, %d bytes", code, len(got))
	}
	if !dst.Store().Has(d) {
		t.Fatal("the fetched blob was not kept")
	}
	if n, b := pull.Fetched(); n != 1 || b != int64(len(blob)) {
		t.Fatalf("Fetched = %d blobs, %d bytes", n, b)
	}
	get(d) // from disk now
	if len(asked) != 1 {
		t.Fatalf("fetched %d times, want once: %v", len(asked), asked)
	}

	// A source that sends other bytes: Docker gets an error, the store nothing.
	bad := randomBytes(t, 1000)
	bd := digestOf(bad)
	liar, err := dst.Open(func(context.Context, string) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(randomBytes(t, 1000))), nil
	}, map[string]int64{bd: 1000})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := liar.FetchBlob(ctx, bd)
	if err == nil {
		_, err = io.ReadAll(rc)
		rc.Close()
	}
	if err == nil || dst.Store().Has(bd) {
		t.Fatalf("wrong bytes from the source: %v, stored %v", err, dst.Store().Has(bd))
	}
	if got := files(t, dst.Store().tmpDir()); len(got) != 0 {
		t.Fatalf("temporary files left: %v", got)
	}

	// Manifests: put by digest (checked), read back, gone with the session.
	m := Manifest{MediaType: "application/vnd.oci.image.manifest.v1+json",
		Bytes: []byte(fmt.Sprintf(`{"schemaVersion":2,"layers":[{"digest":%q}]}`, d))}
	m.Digest = digestOf(m.Bytes)
	if err := pull.PutManifest(ctx, Manifest{MediaType: m.MediaType, Bytes: m.Bytes, Digest: other}); err == nil {
		t.Fatal("a manifest under another digest was taken")
	}
	if err := pull.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	back, err := pull.Manifest(ctx, m.Digest)
	if err != nil || back.Digest != m.Digest || !strings.Contains(back.MediaType, "oci") {
		t.Fatalf("Manifest = %+v, %v", back, err)
	}
	pull.Close()
	if code, _ := get(d); code != http.StatusNotFound {
		t.Fatalf("a closed session still answers: %d", code)
	}
}

// TestRegistryUploadsStreamToDisk: an upload in chunks lands in the store
// once its PUT checks out; an upload never finished leaves nothing once
// its session ends.
func TestRegistryUploadsStreamToDisk(t *testing.T) {
	reg, srv := newRegistry(t)
	sess, err := reg.Open(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	blob := randomBytes(t, 200_000)
	do := func(method, url string, body []byte, hdr ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, url, bytes.NewReader(body))
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	start := func() string {
		resp := do(http.MethodPost, srv.URL+"/v2/"+sess.Repo+"/blobs/uploads/", nil)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST upload: %d", resp.StatusCode)
		}
		return srv.URL + resp.Header.Get("Location")
	}
	loc := start()
	if resp := do(http.MethodPatch, loc, blob[:100_000], "Content-Range", "0-99999"); resp.StatusCode != http.StatusAccepted || resp.Header.Get("Range") != "0-99999" {
		t.Fatalf("PATCH 1: %d %q", resp.StatusCode, resp.Header.Get("Range"))
	}
	if resp := do(http.MethodPatch, loc, blob[100_000:], "Content-Range", "5-10"); resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("PATCH out of order: %d", resp.StatusCode)
	}
	loc = start()
	do(http.MethodPatch, loc, blob[:100_000])
	do(http.MethodPatch, loc, blob[100_000:])
	if resp := do(http.MethodPut, loc+"?digest="+digestOf(blob), nil); resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %d", resp.StatusCode)
	}
	if !reg.Store().Has(digestOf(blob)) {
		t.Fatal("the uploaded blob is not in the store")
	}
	// Half an upload, then the session ends.
	loc = start()
	do(http.MethodPatch, loc, blob[:1000])
	if got := files(t, reg.Store().tmpDir()); len(got) != 2 { // this one and the one refused a chunk out of order
		t.Fatalf("temporary files during an upload: %v", got)
	}
	sess.Close()
	if got := files(t, reg.Store().tmpDir()); len(got) != 0 {
		t.Fatalf("an unfinished upload left %v", got)
	}
}
