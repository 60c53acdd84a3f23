package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
)

// TestJoin pins the join call (POST /v1/join, JSON both ways) and tells
// the issuer's refusal apart from a failure to reach it.
func TestJoin(t *testing.T) {
	type answer struct {
		Subnet int `json:"subnet"`
	}
	tests := []struct {
		name       string
		status     int
		body       string
		wantSubnet int
		wantRefuse string // "" when the join is accepted
	}{
		{"accepted", http.StatusOK, `{"subnet":4}`, 4, ""},
		{"refused with a reason", http.StatusForbidden, `{"error":"this token is not outstanding on m1"}`, 0,
			"join refused: this token is not outstanding on m1"},
		{"refused without one", http.StatusBadGateway, "", 0, "join refused: 502 Bad Gateway"},
		{"token used", http.StatusGone, `{"error":"token can no longer be used: token t1 has been used"}`, 0,
			"join refused: token can no longer be used: token t1 has been used"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, got := recorder(t, tc.status, "application/json", tc.body)
			var out answer
			err := Join(context.Background(), srv.Client(), strings.TrimPrefix(srv.URL, "http://"),
				map[string]string{"machine_id": "new"}, &out)
			if got.Method != "POST" || got.URI != "/v1/join" || got.Body != `{"machine_id":"new"}` {
				t.Errorf("request = %+v", *got)
			}
			var refused *JoinRefusedError
			switch {
			case tc.wantRefuse == "" && (err != nil || out.Subnet != tc.wantSubnet):
				t.Errorf("Join = %+v, %v, want subnet %d", out, err, tc.wantSubnet)
			case tc.wantRefuse != "" && (!errors.As(err, &refused) || err.Error() != tc.wantRefuse || refused.Status != tc.status):
				t.Errorf("Join error = %v, want refusal %q", err, tc.wantRefuse)
			}
		})
	}

	// No issuer at all: an ordinary error, not a refusal, so the joiner
	// tries the issuer's next endpoint.
	err := Join(context.Background(), http.DefaultClient, "127.0.0.1:1", struct{}{}, &struct{}{})
	var refused *JoinRefusedError
	if err == nil || errors.As(err, &refused) {
		t.Errorf("Join to nobody = %v, want a network error", err)
	}
}
