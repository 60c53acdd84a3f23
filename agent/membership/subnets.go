package membership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/uncloud-mesh/uncloud/internal/atomicfile"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/record"
)

const promisesFile = "subnet-promises.json"

// Subnet reservation. A join hands out a /24, and two joins on two sides
// of a partition must not hand out the same one: the CRDT would happily
// keep both records and two machines would own one subnet. So a join, and
// only a join, asks every known machine to promise the subnet to the new
// machine and goes ahead only with promises from a majority. Any two
// majorities share a machine, and a machine never promises one subnet to
// two machines, so at most one of two racing joins can win a subnet. The
// promise is kept in the data dir (it must survive a crash) with the time
// it was made. It is fulfilled once a machine record with that ID and
// subnet exists, and then kept for good (the record guards the subnet
// from there); one still unfulfilled after promiseTTL is dropped, so a
// failed join, or a member asking for promises it never uses, holds a
// subnet for minutes, not forever. A successful join's record appears
// seconds after the promise, far inside promiseTTL.

// promiseTTL is how long a promise waits for its machine's record.
const promiseTTL = 10 * time.Minute

// maxOpenPerAsker bounds the unfulfilled promises one machine may hold
// here: a member gone rogue could otherwise ask for every subnet, for
// machines that never come, and renew that every promiseTTL. A real
// issuer runs one join per token at a time, and a joined machine's record
// fulfils its promise within seconds.
const maxOpenPerAsker = 16

// errTooManyPromises is a machine asking for more than maxOpenPerAsker.
var errTooManyPromises = errors.New("too many subnet promises wait for a machine record")

// subnetPromise is one promise: the machine, when, and whether its record
// has been seen.
type subnetPromise struct {
	MachineID string    `json:"machine_id"`
	At        time.Time `json:"at"`
	By        string    `json:"by,omitempty"` // the machine that asked
	Fulfilled bool      `json:"fulfilled,omitempty"`
}

// promiseBook is this machine's promises, by subnet.
type promiseBook struct {
	path string
	ttl  time.Duration
	mu   sync.Mutex
	// Promises maps a subnet number to the machine it was promised to.
	Promises map[meshaddr.Subnet]subnetPromise `json:"promises"`
	// Promised is the file of earlier versions (subnet -> machine ID, no
	// time); read once, its promises start their clock at the upgrade.
	Promised map[meshaddr.Subnet]string `json:"promised,omitempty"`
}

func loadPromiseBook(dataDir string, now time.Time) (*promiseBook, error) {
	b := &promiseBook{path: filepath.Join(dataDir, promisesFile), ttl: promiseTTL, Promises: map[meshaddr.Subnet]subnetPromise{}}
	if err := readJSONFile(b.path, b); err != nil {
		return nil, err
	}
	if b.Promises == nil {
		b.Promises = map[meshaddr.Subnet]subnetPromise{}
	}
	for n, id := range b.Promised {
		if _, ok := b.Promises[n]; !ok {
			b.Promises[n] = subnetPromise{MachineID: id, At: now}
		}
	}
	b.Promised = nil
	return b, nil
}

// saveLocked runs under b.mu.
func (b *promiseBook) saveLocked() error {
	data, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(b.path, data, 0o600)
}

// settleLocked marks promises whose machine record exists as fulfilled
// and drops unfulfilled ones past the TTL; it reports a change.
func (b *promiseBook) settleLocked(owners map[meshaddr.Subnet]string, now time.Time) bool {
	changed := false
	for n, p := range b.Promises {
		switch {
		case p.Fulfilled:
		case owners[n] == p.MachineID:
			p.Fulfilled = true
			b.Promises[n] = p
			changed = true
		case now.Sub(p.At) > b.ttl:
			delete(b.Promises, n)
			changed = true
		}
	}
	return changed
}

// promise records subnet -> machine unless the subnet is already taken by
// another machine, in this book or in the given records (owners).
// by is the machine that asks (the issuer of the join); it may hold at
// most maxOpenPerAsker unfulfilled promises.
func (b *promiseBook) promise(subnet meshaddr.Subnet, machineID, by string, owners map[meshaddr.Subnet]string, now time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	settled := b.settleLocked(owners, now)
	if owner, ok := owners[subnet]; ok && owner != machineID {
		return b.saveIf(settled, fmt.Errorf("subnet %d belongs to machine %s", subnet, owner))
	}
	if p, ok := b.Promises[subnet]; ok {
		if p.MachineID == machineID {
			return b.saveIf(settled, nil)
		}
		return b.saveIf(settled, fmt.Errorf("subnet %d is promised to machine %s", subnet, p.MachineID))
	}
	open := 0
	for _, p := range b.Promises {
		if p.By == by && !p.Fulfilled {
			open++
		}
	}
	if open >= maxOpenPerAsker {
		return b.saveIf(settled, fmt.Errorf("%w: machine %s holds %d here already; they expire %v after they were made",
			errTooManyPromises, by, open, b.ttl))
	}
	b.Promises[subnet] = subnetPromise{MachineID: machineID, At: now, By: by}
	if err := b.saveLocked(); err != nil {
		delete(b.Promises, subnet)
		return fmt.Errorf("persist promise of subnet %d: %w", subnet, err)
	}
	return nil
}

// saveIf saves a settled book (a failed save only delays the cleanup,
// which is redone at the next call) and returns err.
func (b *promiseBook) saveIf(changed bool, err error) error {
	if changed {
		b.saveLocked()
	}
	return err
}

// release drops machineID's unfulfilled promise of subnet: the join it
// was for failed here.
func (b *promiseBook) release(subnet meshaddr.Subnet, machineID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p, ok := b.Promises[subnet]; ok && p.MachineID == machineID && !p.Fulfilled {
		delete(b.Promises, subnet)
		b.saveLocked()
	}
}

// taken is subnet -> machine for the promises still standing.
func (b *promiseBook) taken(owners map[meshaddr.Subnet]string, now time.Time) map[meshaddr.Subnet]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.saveIf(b.settleLocked(owners, now), nil)
	out := make(map[meshaddr.Subnet]string, len(b.Promises))
	for k, p := range b.Promises {
		out[k] = p.MachineID
	}
	return out
}

// unfulfilled counts promises still waiting for their machine's record.
func (b *promiseBook) unfulfilled() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, p := range b.Promises {
		if !p.Fulfilled {
			n++
		}
	}
	return n
}

// subnetOwners reads which machine owns which subnet from the records.
func subnetOwners(machines []*record.Machine) map[meshaddr.Subnet]string {
	out := map[meshaddr.Subnet]string{}
	for _, m := range machines {
		if n, err := meshaddr.ParseSubnet(m.Subnet); err == nil {
			out[n] = m.ID
		}
	}
	return out
}

// reserveRequest asks a machine to promise a subnet to a new machine.
type reserveRequest struct {
	Subnet    meshaddr.Subnet `json:"subnet"`
	MachineID string          `json:"machine_id"`
}

// HandleReserve is the machine API side of a reservation
// (POST api.MachinePathReserve).
func (m *Members) HandleReserve(w http.ResponseWriter, r *http.Request) {
	var req reserveRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil || !req.Subnet.Valid() || req.MachineID == "" {
		http.Error(w, "bad reservation request", http.StatusBadRequest)
		return
	}
	machines, err := m.MachineRecords(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	asker, _ := api.Caller(r.Context())
	if err := m.promises.promise(req.Subnet, req.MachineID, asker, subnetOwners(machines), m.now()); err != nil {
		status := http.StatusConflict
		if errors.Is(err, errTooManyPromises) {
			status = http.StatusTooManyRequests
		}
		http.Error(w, err.Error(), status)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// reserveSubnet finds the lowest free subnet and gets it promised to
// machineID by a majority of the known machines, this one included.
func (m *Members) reserveSubnet(ctx context.Context, machineID string) (meshaddr.Subnet, error) {
	machines, err := m.MachineRecords(ctx)
	if err != nil {
		return 0, err
	}
	owners := subnetOwners(machines)
	taken := m.promises.taken(owners, m.now())
	var subnet meshaddr.Subnet
	for n := meshaddr.MinSubnet; n <= meshaddr.MaxSubnet; n++ {
		_, owned := owners[n]
		holder, promised := taken[n]
		if (!owned && !promised) || (promised && holder == machineID) {
			subnet = n
			break
		}
	}
	if subnet == 0 {
		return 0, errors.New("all 254 subnets are taken")
	}
	quorum := len(machines)/2 + 1
	if err := m.promises.promise(subnet, machineID, m.state.MachineID, owners, m.now()); err != nil {
		return 0, err
	}
	reserved := false
	defer func() {
		if !reserved { // the join fails here: this machine's promise goes at once
			m.promises.release(subnet, machineID)
		}
	}()
	// Ask everyone at once and go ahead as soon as a majority promised:
	// on the majority side of a partition the unreachable machines would
	// otherwise hold the join until the call timeout. The remaining calls
	// finish in the background (a late promise is harmless).
	type answer struct {
		name string
		err  error
	}
	answers := make(chan answer, len(machines))
	asked := 0
	callCtx, cancel := context.WithTimeout(m.ctx, m.reserveCallTimeout)
	for _, mr := range machines {
		if mr.ID == m.state.MachineID {
			continue
		}
		asked++
		go func() {
			answers <- answer{mr.Name, m.askReserve(callCtx, mr.ID, api.ReserveRequest{Subnet: subnet, MachineID: machineID})}
		}()
	}
	received := 0
	defer func() {
		go func(left int) { // the calls still out end by callCtx
			for range left {
				<-answers
			}
			cancel()
		}(asked - received)
	}()
	granted := 1
	var refusals []error
	for received < asked && granted < quorum {
		var a answer
		select {
		case a = <-answers:
			received++
		case <-ctx.Done():
			return 0, fmt.Errorf("subnet %d: %w", subnet, ctx.Err())
		}
		if a.err != nil {
			refusals = append(refusals, fmt.Errorf("%s: %w", a.name, a.err))
			continue
		}
		granted++
	}
	if granted < quorum {
		return 0, fmt.Errorf("subnet %d: only %d of %d machines agreed, a join needs %d (a partition or machines down?): %w",
			subnet, granted, len(machines), quorum, errors.Join(refusals...))
	}
	reserved = true
	return subnet, nil
}

func (m *Members) askReserve(ctx context.Context, machineID string, req api.ReserveRequest) error {
	if err := m.parts.Calls.Reserve(ctx, machineID, req); err != nil {
		return fmt.Errorf("refused: %w", err)
	}
	return nil
}
