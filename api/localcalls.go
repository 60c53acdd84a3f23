package api

import (
	"context"
	"net/http"
	"net/url"
)

// The local API's calls about the machine and the network, one method
// per call, named like the Backend method that answers it.

// Status describes the machine the client talks to.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.call(ctx, "Status", http.MethodGet, PathStatus, nil, &st)
	return st, err
}

// StateList lists the replicated state's records under prefix.
func (c *Client) StateList(ctx context.Context, prefix string) ([]StateEntry, error) {
	var es []StateEntry
	err := c.call(ctx, "StateList", http.MethodGet, PathState+"?prefix="+url.QueryEscape(prefix), nil, &es)
	return es, err
}

// StateGet reads one record of the replicated state.
func (c *Client) StateGet(ctx context.Context, key string) (StateEntry, error) {
	var e StateEntry
	err := c.call(ctx, "StateGet", http.MethodGet, PathStateGet+"?key="+url.QueryEscape(key), nil, &e)
	return e, err
}

// Machines lists the network's machines.
func (c *Client) Machines(ctx context.Context) ([]MachineInfo, error) {
	var ms []MachineInfo
	err := c.call(ctx, "Machines", http.MethodGet, PathMachines, nil, &ms)
	return ms, err
}

// RemoveMachine revokes a machine and rotates the gossip key.
func (c *Client) RemoveMachine(ctx context.Context, nameOrID string) (RemoveResult, error) {
	var res RemoveResult
	err := c.call(ctx, "RemoveMachine", http.MethodDelete, under(PathMachines, nameOrID), nil, &res)
	return res, err
}

// UpdateMachine renames a machine or changes its roles.
func (c *Client) UpdateMachine(ctx context.Context, nameOrID string, u MachineUpdate) (MachineInfo, error) {
	var m MachineInfo
	err := c.call(ctx, "UpdateMachine", http.MethodPatch, under(PathMachines, nameOrID), u, &m)
	return m, err
}

// CreateToken issues a join token; the answer alone carries its secret.
func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (TokenInfo, error) {
	var t TokenInfo
	err := c.call(ctx, "CreateToken", http.MethodPost, PathTokens, req, &t)
	return t, err
}

// ListTokens lists the tokens the machine issued.
func (c *Client) ListTokens(ctx context.Context) ([]TokenInfo, error) {
	var ts []TokenInfo
	err := c.call(ctx, "ListTokens", http.MethodGet, PathTokens, nil, &ts)
	return ts, err
}

// RevokeToken revokes a token the machine issued.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.call(ctx, "RevokeToken", http.MethodDelete, under(PathTokens, id), nil, nil)
}

// Mesh describes the machine's paths to its peers.
func (c *Client) Mesh(ctx context.Context) (MeshStatus, error) {
	var st MeshStatus
	err := c.call(ctx, "Mesh", http.MethodGet, PathMesh, nil, &st)
	return st, err
}

// Ingress describes the machine's reverse proxy and its routes.
func (c *Client) Ingress(ctx context.Context) (IngressStatus, error) {
	var st IngressStatus
	err := c.call(ctx, "Ingress", http.MethodGet, PathIngress, nil, &st)
	return st, err
}

// DNSNames lists the names the machine's resolver answers.
func (c *Client) DNSNames(ctx context.Context) (DNSNames, error) {
	var n DNSNames
	err := c.call(ctx, "DNSNames", http.MethodGet, PathDNS, nil, &n)
	return n, err
}

// DNSQuery asks the machine's resolver one question.
func (c *Client) DNSQuery(ctx context.Context, name, qtype string) (DNSAnswer, error) {
	var a DNSAnswer
	q := url.Values{"name": {name}, "type": {qtype}}
	err := c.call(ctx, "DNSQuery", http.MethodGet, PathDNSQuery+"?"+q.Encode(), nil, &a)
	return a, err
}
