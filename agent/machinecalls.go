package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/uncloud-mesh/uncloud/api"
)

// callMachine makes one machine API call to another machine, over the
// mesh with mutual TLS, and decodes a JSON answer into out (if not nil).
// A non-2xx answer becomes an error carrying the other side's message.
func (d *Daemon) callMachine(ctx context.Context, machineID, method, path string, in, out any) error {
	return d.callMachineWith(ctx, d.machineClient, machineID, method, path, in, out)
}

// callMachineWith is callMachine through a given client (one with other
// timeouts, e.g. for container calls).
func (d *Daemon) callMachineWith(ctx context.Context, client *http.Client, machineID, method, path string, in, out any) error {
	base, err := d.machineAPIURL(machineID)
	if err != nil {
		return err
	}
	req, err := api.NewJSONRequest(ctx, method, base+path, in)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return &remoteError{Status: resp.StatusCode, Message: string(bytes.TrimSpace(msg))}
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out); err != nil {
		return fmt.Errorf("decode the answer to %s %s: %w", method, path, err)
	}
	return nil
}

// remoteError is a refusal from another machine's API.
type remoteError struct {
	Status  int
	Message string
}

func (e *remoteError) Error() string {
	if e.Message == "" {
		return http.StatusText(e.Status)
	}
	return e.Message
}
