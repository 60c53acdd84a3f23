package agent

import (
	"context"
	"crypto/ecdh"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/uncloud-mesh/uncloud/agent/orchestrate"
	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
	"github.com/uncloud-mesh/uncloud/sealing"
)

// unsealer opens the sealed values of a container spec on the machine
// that creates the container, with this machine's sealing key: the
// environment from the spec itself, secrets and configs from their
// records in the replicated state. The plain values go to the runtime,
// which gives them to Docker only; nothing here logs a value.
type unsealer struct {
	id    string
	key   *ecdh.PrivateKey
	store *crdt.Store
	// wait bounds how long a secret's version may take to reach this
	// machine (the deploy wrote it on another one a moment ago).
	wait time.Duration
}

// secretWait is unsealer.wait's default.
const secretWait = 20 * time.Second

func (u *unsealer) open(ctx context.Context, spec runtime.ContainerSpec) (runtime.Opened, error) {
	var out runtime.Opened
	if len(spec.EnvSealed) == 0 && len(spec.Files) == 0 {
		return out, nil
	}
	if u == nil || u.key == nil {
		return out, fmt.Errorf("%w: this machine has no sealing key to open the service's sealed values", api.ErrUnavailable)
	}
	env, err := orchestrate.OpenEnv(spec, u.id, u.key)
	if errors.Is(err, sealing.ErrNotRecipient) {
		return out, fmt.Errorf("%w: the environment of %s was sealed before this machine was a member; it is re-wrapped for the members of now shortly (or deploy the service again)",
			api.ErrUnavailable, spec.Service)
	}
	if err != nil {
		return out, fmt.Errorf("open the environment of %s: %w", spec.Service, err)
	}
	out.Env = env
	out.Files = map[string][]byte{}
	for _, f := range spec.Files {
		data, err := u.openFile(ctx, f)
		if err != nil {
			return out, err
		}
		out.Files[runtime.FileKey(f)] = data
	}
	return out, nil
}

// openFile opens a secret's or config's content at the spec's version,
// waiting for it to arrive (or to be re-wrapped for this machine).
func (u *unsealer) openFile(ctx context.Context, f runtime.FileRef) ([]byte, error) {
	key := record.SecretName(f.Kind, f.Name)
	wait := u.wait
	if wait <= 0 {
		wait = secretWait
	}
	deadline := time.Now().Add(wait)
	for {
		why := u.tryFile(ctx, key, f)
		if why.data != nil {
			return why.data, nil
		}
		if why.fatal || time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: %s %q version %s: %v", api.ErrUnavailable, f.Kind, f.Name, f.Version, why.err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s %q: %w", f.Kind, f.Name, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

type fileTry struct {
	data  []byte
	err   error
	fatal bool
}

func (u *unsealer) tryFile(ctx context.Context, key string, f runtime.FileRef) fileTry {
	r, err := u.store.Get(ctx, record.SecretsPrefix+key)
	if errors.Is(err, crdt.ErrNotFound) {
		return fileTry{err: errors.New("not stored on this machine (yet)")}
	}
	if err != nil {
		return fileTry{err: err}
	}
	s, ok := r.(*record.Secret)
	if !ok {
		return fileTry{err: fmt.Errorf("record %s is not a secret", key), fatal: true}
	}
	if s.Version != f.Version {
		return fileTry{err: fmt.Errorf("this machine has version %s (a later deploy changed it, or it has not arrived yet)", s.Version)}
	}
	data, _, err := sealing.Open(s.Data, record.SecretAAD(key, s.Version), u.id, u.key)
	if errors.Is(err, sealing.ErrNotRecipient) {
		return fileTry{err: errors.New("not sealed for this machine (yet): it is re-wrapped for the members of now shortly")}
	}
	if err != nil {
		return fileTry{err: err, fatal: true}
	}
	if data == nil {
		data = []byte{}
	}
	return fileTry{data: data}
}

// sealing is this machine's sealing identity for orchestration; its key
// derives from the identity seed, so nothing new is stored.
func (d *Daemon) sealing() orchestrate.Sealing {
	k, err := sealing.KeyFromSeed(d.state.IdentitySeed)
	if err != nil {
		d.log.Warn("no sealing key: every deploy seals environment values anew", "err", err)
		return orchestrate.Sealing{MachineID: d.state.MachineID}
	}
	return orchestrate.Sealing{MachineID: d.state.MachineID, Key: k}
}

func (d *Daemon) unsealer() *unsealer {
	s := d.sealing()
	return &unsealer{id: s.MachineID, key: s.Key, store: d.store}
}

// secretsDir is where containers' secrets and configs are written.
func (d *Daemon) secretsDir() string {
	if d.opts.SecretsDir != "" {
		return d.opts.SecretsDir
	}
	return filepath.Join(filepath.Dir(d.opts.Socket), "secrets")
}

// sealedView is how `state ls` and `state get` show a secret or config:
// who it is sealed for, never its content (nor its ciphertext).
type sealedView struct {
	Name      string    `json:"name"`
	Version   string    `json:"version"`
	Bytes     int       `json:"sealed_bytes"`
	SealedFor []string  `json:"sealed_for,omitempty"`
	Exposed   []string  `json:"exposed,omitempty"`
	Modified  time.Time `json:"modified"`
	By        string    `json:"by,omitempty"`
}

// publicView is what the state commands show of a record: sealed values
// by name only.
func publicView(r crdt.Record) any {
	switch r := r.(type) {
	case *record.Secret:
		v := sealedView{Name: r.Name, Version: r.Version, Bytes: len(r.Data), Modified: r.Modified, By: r.By}
		if h, err := sealing.ParseHeader(r.Data); err == nil {
			v.SealedFor, v.Exposed = h.RecipientIDs(), h.Exposed
		}
		return v
	case *record.Service:
		c := *r
		c.Spec = runtime.PublicJSON(r.Spec)
		return &c
	}
	return r
}

// resealEvery is the re-wrap pass interval when nothing pokes it.
const resealEvery = time.Minute

// startReseal keeps sealed values wrapped for the members of now
// (orchestrate.Reseal): after each membership change, and every minute.
func (d *Daemon) startReseal(ctx context.Context) {
	poke := make(chan struct{}, 1)
	for _, prefix := range []string{record.MachinesPrefix, record.RevokedPrefix} {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			ch, err := d.store.Watch(ctx, prefix) // waits for the store to be ready
			if err != nil {
				if ctx.Err() == nil {
					d.log.Warn("re-wrap of sealed values: watch", "prefix", prefix, "err", err)
				}
				return
			}
			for range ch {
				select {
				case poke <- struct{}{}:
				default:
				}
			}
		}()
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		tick := time.NewTicker(resealEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-poke:
			case <-tick.C:
			}
			// Let a burst settle (a join writes the record, then gossip
			// says the machine is alive).
			select {
			case <-ctx.Done():
				return
			case <-time.After(2 * time.Second):
			}
			if n, err := d.Orchestrator.Reseal(ctx); err != nil {
				d.log.Warn("re-wrap of sealed values", "err", err)
			} else if n > 0 {
				d.log.Info("sealed values re-wrapped for the members of now", "records", n)
			}
		}
	}()
}

// restoreFiles writes again the secrets and configs of this machine's
// containers that lost them (a reboot empties the tmpfs they live in), and
// starts those containers; run once the runtime is ready.
func (p *localDocker) restoreFiles(ctx context.Context) {
	rt, err := p.runtime()
	if err != nil {
		return
	}
	missing, err := rt.MissingFiles(ctx)
	if err != nil {
		p.log.Warn("containers' secrets: list", "err", err)
		return
	}
	for id, spec := range missing {
		opened := runtime.Opened{Files: map[string][]byte{}}
		for _, f := range spec.Files {
			data, err := p.unseal.openFile(ctx, f)
			if err != nil {
				p.log.Warn("container's secrets cannot be restored: deploy its service again", "container", id, "err", err)
				opened.Files = nil
				break
			}
			opened.Files[runtime.FileKey(f)] = data
		}
		if opened.Files == nil {
			continue
		}
		if err := rt.RestoreFiles(ctx, id, spec, opened); err != nil {
			p.log.Warn("container's secrets not restored", "container", id, "err", err)
			continue
		}
		p.log.Info("container's secrets and configs restored", "container", id, "service", spec.Service)
	}
}
