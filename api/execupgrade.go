package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// The exec stream travels on an HTTP/1.1 connection taken over after an
// Upgrade: the CLI's call to its agent (unix socket, or SSH to one) and
// the agent's call to the machine that runs the container (mutual TLS)
// are ordinary calls with a JSON body, answered either with an error as
// any other call, or with 101 Switching Protocols, after which the
// connection carries exec frames (execframe.go) both ways. The 101 says
// which container and machine the command runs in.

// ExecUpgradeProtocol names the exec stream in the Upgrade header.
const ExecUpgradeProtocol = "uncloud-exec/1"

// Headers of the 101 answer.
const (
	headerExecContainer = "Uncloud-Exec-Container"
	headerExecMachine   = "Uncloud-Exec-Machine"
)

// IsExecUpgrade says whether a call asks for the exec stream.
func IsExecUpgrade(r *http.Request) bool {
	return headerHas(r.Header, "Connection", "upgrade") && strings.EqualFold(r.Header.Get("Upgrade"), ExecUpgradeProtocol)
}

func headerHas(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// UpgradeExec answers a call that asked for the exec stream with 101 and
// serves session s on the connection until the exec ends (ServeExec). The
// caller has read the request's body; s is closed when it returns. The
// request's context still ends when the server shuts down, but no longer
// when the client goes away: the stream's own keepalive sees that.
func UpgradeExec(ctx context.Context, w http.ResponseWriter, r *http.Request, target ExecTarget, s ExecSession, t ExecTiming) error {
	// What is left of the body (a newline after the JSON) would otherwise
	// be read as the first frame; the body's length is bounded by the
	// caller's reader (decodeBody).
	io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		s.Close()
		http.Error(w, "this connection cannot carry an exec stream: "+err.Error(), http.StatusInternalServerError)
		return fmt.Errorf("take over the connection for the exec stream: %w", err)
	}
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n%s: %s\r\n%s: %s\r\n\r\n",
		ExecUpgradeProtocol, headerExecContainer, headerValue(target.Container), headerExecMachine, headerValue(target.Machine))
	if err := brw.Flush(); err != nil {
		conn.Close()
		s.Close()
		return fmt.Errorf("answer the exec upgrade: %w", err)
	}
	return ServeExec(ctx, brw.Reader, conn, s, t)
}

// headerValue keeps a name from breaking the header block.
func headerValue(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

// dialExec makes a call that asks for the exec stream and returns the
// stream once the callee said 101; any other answer is its error.
func dialExec(ctx context.Context, h *http.Client, url string, body any, peer string, t ExecTiming) (*execStream, ExecTarget, error) {
	req, err := NewJSONRequest(ctx, http.MethodPost, url, body)
	if err != nil {
		return nil, ExecTarget{}, err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", ExecUpgradeProtocol)
	resp, err := h.Do(req)
	if err != nil {
		return nil, ExecTarget{}, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		if err := answerError(resp); err != nil {
			return nil, ExecTarget{}, err
		}
		return nil, ExecTarget{}, fmt.Errorf("%s answered %s, not an exec stream: it runs an uncloud too old for interactive exec", peer, resp.Status)
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		return nil, ExecTarget{}, fmt.Errorf("the HTTP client cannot write to the exec stream of %s", peer)
	}
	target := ExecTarget{Container: resp.Header.Get(headerExecContainer), Machine: resp.Header.Get(headerExecMachine)}
	return newExecStream(rwc, peer, t), target, nil
}

// ExecAttach starts a command in one of a service's containers with its
// input and output attached, and returns the session and where it runs.
// The session lives until the command ends or Close.
func (c *Client) ExecAttach(ctx context.Context, name string, req ExecRequest) (ExecSession, ExecTarget, error) {
	s, target, err := dialExec(ctx, c.HTTP, c.BaseURL+under(PathServices, name, "exec"), req, "the agent at "+c.Target, c.ExecTiming)
	if err != nil {
		return nil, target, &CallError{Call: "ExecAttach", Target: c.Target, Err: err}
	}
	return s, target, nil
}

// ExecAttach starts a command in a container on machineID with its input
// and output attached.
func (c *MachineClient) ExecAttach(ctx context.Context, machineID, id string, req ContainerExecRequest) (ExecSession, error) {
	base, err := c.BaseURL(machineID)
	if err != nil {
		return nil, &CallError{Call: "ExecAttach", Target: "machine " + machineID, Err: err}
	}
	s, _, err := dialExec(ctx, c.Long, base+under(MachinePathRuntimeContainers, id, "exec"), req, "machine "+machineID, c.ExecTiming)
	if err != nil {
		return nil, &CallError{Call: "ExecAttach", Target: "machine " + machineID, Err: err}
	}
	return s, nil
}
