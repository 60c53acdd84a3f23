package runtime

import (
	"strconv"
	"strings"
	"testing"
)

func TestParsePullPolicy(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want PullPolicy
		err  bool
	}{
		{"", PullMissing, false}, {"missing", PullMissing, false}, {"if_not_present", PullMissing, false},
		{"always", PullAlways, false}, {"never", PullNever, false}, {"build", PullMissing, false},
		{"sometimes", "", true}, {"Always", "", true},
	} {
		got, err := ParsePullPolicy(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParsePullPolicy(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// A pull's answer as Docker 20.10 streams it (ids and sizes shortened).
const pullStream = `{"status":"Pulling from team/echo","id":"1"}
{"status":"Pulling fs layer","progressDetail":{},"id":"aaa"}
{"status":"Already exists","progressDetail":{},"id":"bbb"}
{"status":"Downloading","progressDetail":{"current":100,"total":400},"progress":"[==>  ]","id":"aaa"}
{"status":"Downloading","progressDetail":{"current":400,"total":400},"progress":"[=====]","id":"aaa"}
{"status":"Download complete","progressDetail":{},"id":"aaa"}
{"status":"Extracting","progressDetail":{"current":400,"total":400},"id":"aaa"}
{"status":"Pull complete","progressDetail":{},"id":"aaa"}
{"status":"Digest: sha256:0123"}
{"status":"Status: Downloaded newer image for 10.0.0.1:5000/team/echo:1"}
`

func TestReadPull(t *testing.T) {
	t.Run("progress and the end", func(t *testing.T) {
		var last PullStatus
		n := 0
		if err := readPull(strings.NewReader(pullStream), func(s PullStatus) { last = s; n++ }); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatal("no progress")
		}
		want := PullStatus{Layers: 2, LayersDone: 2, Bytes: 400, Total: 400, Digest: "sha256:0123"}
		if last != want {
			t.Errorf("last progress %+v, want %+v", last, want)
		}
	})
	t.Run("an error message ends the pull with its words", func(t *testing.T) {
		s := `{"status":"Pulling fs layer","id":"aaa"}` + "\n" +
			`{"errorDetail":{"message":"unexpected EOF"},"error":"unexpected EOF"}` + "\n"
		err := readPull(strings.NewReader(s), nil)
		if err == nil || err.Error() != "unexpected EOF" {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("garbage is an error, not a hang", func(t *testing.T) {
		if err := readPull(strings.NewReader("{not json"), nil); err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("layers are bounded", func(t *testing.T) {
		var b strings.Builder
		for i := range maxPullLayers + 50 {
			b.WriteString(`{"status":"Pulling fs layer","id":"l` + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + strconv.Itoa(i) + `"}` + "\n")
		}
		var last PullStatus
		if err := readPull(strings.NewReader(b.String()), func(s PullStatus) { last = s }); err != nil {
			t.Fatal(err)
		}
		if last.Layers != maxPullLayers {
			t.Errorf("%d layers kept, want the bound %d", last.Layers, maxPullLayers)
		}
	})
}

func TestPinDigest(t *testing.T) {
	for _, tc := range []struct{ pin, want string }{
		{"", ""},
		{"10.0.0.1:5000/team/echo@sha256:abc", "sha256:abc"},
		{"sha256:def", "sha256:def"},
	} {
		s := ContainerSpec{Image: "x", ImagePin: tc.pin}
		if got := s.PinDigest(); got != tc.want {
			t.Errorf("PinDigest(%q) = %q, want %q", tc.pin, got, tc.want)
		}
		if want := map[bool]string{true: "x", false: tc.pin}[tc.pin == ""]; s.RunImage() != want {
			t.Errorf("RunImage(%q) = %q, want %q", tc.pin, s.RunImage(), want)
		}
	}
}
