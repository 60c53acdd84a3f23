package agent

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/runtime"
)

// TestLoadImageBounded: a pushed tarball larger than the machine's limit
// is refused with 413 and a message naming the limit, whether the sender
// says its length (refused before a byte is read) or streams it (refused
// as soon as it goes past).
func TestLoadImageBounded(t *testing.T) {
	rt, err := runtime.New(runtime.Config{MachineID: "m1", MachineName: "m1", Subnet: 250,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	p := &localDocker{machineID: "m1", machineName: func() string { return "m1" }, rt: rt, ready: true, imageMaxBytes: 1 << 20}
	srv := httptest.NewServer(http.HandlerFunc(p.handleLoadImage))
	defer srv.Close()
	big := strings.Repeat("x", 2<<20)

	post := func(body io.Reader) (int, string) {
		t.Helper()
		resp, err := http.Post(srv.URL+"?ref=app:1&id=sha256:abc", "application/x-tar", body)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, msg := post(strings.NewReader(big)) // with a Content-Length
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(msg, "larger than the 1 MiB that m1 accepts") {
		t.Fatalf("declared 2 MiB push = %d %q, want 413 naming the limit", code, msg)
	}

	// Streamed without a length: needs Docker to read it.
	if os.Geteuid() != 0 {
		t.Skip("the streamed case needs root and Docker")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := rt.Client().Ping(ctx); err != nil {
		t.Skipf("Docker not reachable (%v): the streamed case needs it", err)
	}
	code, msg = post(io.MultiReader(strings.NewReader(big))) // no length: chunked
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(msg, "--image-max-bytes") {
		t.Fatalf("streamed 2 MiB push = %d %q, want 413 naming the limit", code, msg)
	}
}
