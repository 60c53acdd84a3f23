package orchestrate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
	"github.com/uncloud-mesh/uncloud/sealing"
)

// Keeping sealed values wrapped for the members of now (as the ingress
// does for its certificates, ingress/reseal.go).
//
// The agent calls Reseal after each membership change (machine records,
// the revoked set) and every minute. For every secret or config, and
// every service's sealed environment, whose recipients are not the
// members of now (a machine joined, or was removed), the lowest live
// member that can open it seals the same content again for the members,
// keeping its version (so nothing rolls) and its exposure history. A
// machine that joined can then run the service; a removed one is no
// longer a recipient of what is written from then on. What a removed
// machine could read stays readable to whoever kept a copy: Reseal says
// which secrets to rotate (a deploy with new content).
//
// A re-wrap is written only if the record has not changed since it was
// read; a deploy on another machine in the same instant can still race
// it (the state keeps one of the two writes): the deploy's next run, or
// the next deploy, puts its version back.

// Reseal re-wraps what is not sealed for the members of now, where this
// machine is the one to do it, and returns how many records it wrote.
func (o *Orchestrator) Reseal(ctx context.Context) (int, error) {
	if o.sealing.Key == nil {
		return 0, nil
	}
	recips, ids, err := o.recipients(ctx)
	if err != nil {
		return 0, err
	}
	all, err := o.fleet.Machines(ctx)
	if err != nil {
		return 0, err
	}
	var live []string
	for _, m := range all {
		if m.Reachable() {
			live = append(live, m.ID)
		}
	}
	slices.Sort(live)
	mine := func(h sealing.Header) bool {
		rs := slices.Sorted(slices.Values(h.RecipientIDs()))
		if slices.Equal(rs, ids) {
			return false
		}
		for _, id := range live {
			if slices.Contains(rs, id) {
				return id == o.sealing.MachineID
			}
		}
		return false
	}
	n := 0
	secrets, err := o.store.List(ctx, record.SecretsPrefix)
	if err != nil {
		return n, err
	}
	for _, r := range secrets {
		s, ok := r.(*record.Secret)
		if !ok {
			continue
		}
		h, err := sealing.ParseHeader(s.Data)
		if err != nil {
			o.log.Warn("sealed secret unreadable", "name", s.Name, "err", err)
			continue
		}
		o.warnExposed(s.Name, s.Version, h, ids)
		if !mine(h) {
			continue
		}
		if err := o.rewrapSecret(ctx, s, recips); err != nil {
			o.log.Warn("re-wrap secret", "name", s.Name, "err", err)
			continue
		}
		n++
	}
	services, err := o.store.List(ctx, record.ServicesPrefix)
	if err != nil {
		return n, err
	}
	for _, r := range services {
		svc, ok := r.(*record.Service)
		if !ok {
			continue
		}
		var spec runtime.ContainerSpec
		if json.Unmarshal(svc.Spec, &spec) != nil || len(spec.EnvSealed) == 0 {
			continue
		}
		h, err := sealing.ParseHeader(spec.EnvSealed)
		if err != nil || !mine(h) {
			continue
		}
		if err := o.rewrapEnv(ctx, svc, spec, recips); err != nil {
			o.log.Warn("re-wrap environment", "service", svc.Name, "err", err)
			continue
		}
		n++
	}
	return n, nil
}

func (o *Orchestrator) rewrapSecret(ctx context.Context, s *record.Secret, recips []sealing.Recipient) error {
	aad := record.SecretAAD(s.Name, s.Version)
	plain, h, err := o.open(s.Data, aad)
	if err != nil {
		return err
	}
	data, err := sealing.Seal(plain, aad, recips, h.Exposed)
	if err != nil {
		return err
	}
	now, err := o.secret(ctx, s.Name)
	if err != nil || now.Version != s.Version || !bytes.Equal(now.Data, s.Data) {
		return fmt.Errorf("changed meanwhile; left to the next pass")
	}
	out := *s
	out.Data, out.By = data, o.sealing.MachineID
	if err := o.store.Put(ctx, out.Key(), &out); err != nil {
		return err
	}
	o.log.Info("secret re-wrapped for the members", "name", s.Name, "version", s.Version, "was", h.RecipientIDs())
	return nil
}

func (o *Orchestrator) rewrapEnv(ctx context.Context, svc *record.Service, spec runtime.ContainerSpec, recips []sealing.Recipient) error {
	aad := envAAD(spec.Service, spec.EnvVersion)
	plain, h, err := o.open(spec.EnvSealed, aad)
	if err != nil {
		return err
	}
	if spec.EnvSealed, err = sealing.Seal(plain, aad, recips, h.Exposed); err != nil {
		return err
	}
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	now, err := o.service(ctx, svc.Name)
	if err != nil || !bytes.Equal(now.Spec, svc.Spec) {
		return fmt.Errorf("changed meanwhile; left to the next pass")
	}
	out := *now
	out.Spec = specJSON
	if err := o.store.Put(ctx, out.Key(), &out); err != nil {
		return err
	}
	o.log.Info("environment re-wrapped for the members", "service", svc.Name, "was", h.RecipientIDs())
	return nil
}

// warnExposed says, once per secret version, that a machine no longer a
// member could read it: re-wrapping does not take back what it read.
func (o *Orchestrator) warnExposed(name, version string, h sealing.Header, members []string) {
	var gone []string
	for _, id := range h.Exposed {
		if _, ok := slices.BinarySearch(members, id); !ok {
			gone = append(gone, id)
		}
	}
	if len(gone) == 0 {
		return
	}
	if _, seen := o.exposedWarned.LoadOrStore(name+"@"+version, true); seen {
		return
	}
	o.log.Warn("secret was readable by machines no longer members: rotate it (deploy it with new content)", "name", name, "machines", gone)
}
