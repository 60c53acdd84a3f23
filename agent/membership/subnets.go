package membership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sync"

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
// promise is kept in the data dir (it must survive a crash) and never
// expires: a failed join leaks at worst a /24 until that machine is removed.

// promiseBook is this machine's promises: subnet -> machine ID.
type promiseBook struct {
	path string
	mu   sync.Mutex
	// Promised maps a subnet number to the machine it was promised to.
	Promised map[meshaddr.Subnet]string `json:"promised"`
}

func loadPromiseBook(dataDir string) (*promiseBook, error) {
	b := &promiseBook{path: filepath.Join(dataDir, promisesFile), Promised: map[meshaddr.Subnet]string{}}
	if err := readJSONFile(b.path, b); err != nil {
		return nil, err
	}
	if b.Promised == nil {
		b.Promised = map[meshaddr.Subnet]string{}
	}
	return b, nil
}

// promise records subnet -> machine unless the subnet is already taken by
// another machine, in this book or in the given records.
func (b *promiseBook) promise(subnet meshaddr.Subnet, machineID string, owners map[meshaddr.Subnet]string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if owner, ok := owners[subnet]; ok && owner != machineID {
		return fmt.Errorf("subnet %d belongs to machine %s", subnet, owner)
	}
	if owner, ok := b.Promised[subnet]; ok {
		if owner == machineID {
			return nil
		}
		return fmt.Errorf("subnet %d is promised to machine %s", subnet, owner)
	}
	b.Promised[subnet] = machineID
	data, err := json.MarshalIndent(b, "", "  ")
	if err == nil {
		err = writeFileAtomic(b.path, data, 0o600)
	}
	if err != nil {
		delete(b.Promised, subnet)
		return fmt.Errorf("persist promise of subnet %d: %w", subnet, err)
	}
	return nil
}

func (b *promiseBook) taken() map[meshaddr.Subnet]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[meshaddr.Subnet]string, len(b.Promised))
	for k, v := range b.Promised {
		out[k] = v
	}
	return out
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
	if err := m.promises.promise(req.Subnet, req.MachineID, subnetOwners(machines)); err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
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
	taken := m.promises.taken()
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
	if err := m.promises.promise(subnet, machineID, owners); err != nil {
		return 0, err
	}
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
	return subnet, nil
}

func (m *Members) askReserve(ctx context.Context, machineID string, req api.ReserveRequest) error {
	if err := m.parts.Calls.Reserve(ctx, machineID, req); err != nil {
		return fmt.Errorf("refused: %w", err)
	}
	return nil
}
