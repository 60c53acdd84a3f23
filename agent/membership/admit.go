package membership

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/meshaddr"
)

// admit runs the issuer's side of a join once the request is checked: it
// spends one use of the token (saved) before anything else, so a flood of
// joins with one token reserves nothing beyond its uses; reserves a subnet
// by majority promise; and commits. A failure after the use was taken
// gives it back. It returns the HTTP status to answer a failure with.
func (m *Members) admit(ctx context.Context, tokenID string, req joinRequest, now time.Time) (PendingJoin, meshaddr.Subnet, int, error) {
	if err := m.tokens.take(tokenID, req.MachineID, now); err != nil {
		return PendingJoin{}, 0, tokenErrorStatus(err), err
	}
	committed := false
	defer func() {
		if committed {
			return
		}
		if err := m.tokens.giveBack(tokenID, req.MachineID); err != nil {
			m.log.Error("a failed join's token use not given back", "token", tokenID, "err", err)
		}
	}()
	subnet, err := m.reserveSubnet(ctx, req.MachineID)
	if err != nil {
		return PendingJoin{}, 0, http.StatusServiceUnavailable, fmt.Errorf("reserve a subnet: %w", err)
	}
	pending := PendingJoin{
		Seed: Seed{Name: req.Name, MachineID: req.MachineID, IdentityKey: req.IdentityKey, WireGuardKey: req.WireGuardKey,
			Address: subnet.MachineAddr(), Subnet: subnet.Prefix(), Endpoints: ParseEndpoints(req.Endpoints)},
		Until: now.Add(time.Hour),
	}
	if err := m.tokens.commit(tokenID, pending, now); err != nil {
		m.promises.release(subnet, req.MachineID)
		return PendingJoin{}, 0, http.StatusInternalServerError, err
	}
	committed = true
	return pending, subnet, 0, nil
}

// tokenErrorStatus is how the join call answers a token that cannot admit
// a machine now: 409 while another join holds it, 410 once it never will.
func tokenErrorStatus(err error) int {
	switch {
	case errors.Is(err, errTokenBusy):
		return http.StatusConflict
	case errors.Is(err, errTokenGone):
		return http.StatusGone
	}
	return http.StatusForbidden
}

// joinBusyRetry is how often a joiner asks again while another join with
// its token is in progress (a multi-use token handed to several machines).
const joinBusyRetry = 500 * time.Millisecond

// callJoinOnce makes the join call, asking again while the issuer answers
// that another join with the same token is in progress (409), until ctx
// ends. Any other answer, a refusal included, is returned as it is.
func callJoinOnce(ctx context.Context, client *http.Client, target string, req joinRequest, resp *joinResponse) error {
	for {
		err := api.Join(ctx, client, target, req, resp)
		var refused *api.JoinRefusedError
		if !errors.As(err, &refused) || refused.Status != http.StatusConflict || !errors.Is(errTokenBusyMessage(refused), errTokenBusy) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(joinBusyRetry):
		}
	}
}

// errTokenBusyMessage recognises the issuer's "in progress" answer among
// 409s (a taken name is a 409 too, and is final).
func errTokenBusyMessage(e *api.JoinRefusedError) error {
	if e != nil && strings.HasPrefix(e.Message, errTokenBusy.Error()) {
		return errTokenBusy
	}
	return nil
}
