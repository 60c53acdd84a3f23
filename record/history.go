package record

import (
	"encoding/json"
	"fmt"
	"time"
)

// HistoryPrefix holds each service's versions, one record per service.
const HistoryPrefix = "/history/"

const KindHistory Kind = "history"

// HistoryKeep is how many versions a service's history keeps.
const HistoryKeep = 10

// History is the last versions of a service (newest first), written by
// the machine that ran or deployed a changed spec. Like a service
// record, any member may write it: it is what any member's command did.
type History struct {
	Service  string    `json:"service"`
	Versions []Version `json:"versions"`
}

// Version is one spec a service ran: what, when and who.
type Version struct {
	// N counts the service's versions, 1 for the first; a rollback to
	// version N is a new version with a higher N.
	N      int       `json:"n"`
	Time   time.Time `json:"time"`
	Image  string    `json:"image"`
	Digest string    `json:"digest,omitempty"` // the pin's digest
	// Machine is the machine that got the command, User the CLI's
	// user@host as the request said (not verified: a hint for people).
	Machine string `json:"machine"`
	User    string `json:"user,omitempty"`
	// Action is run, deploy or rollback (with RollbackOf, the version it
	// went back to).
	Action     string `json:"action"`
	RollbackOf int    `json:"rollback_of,omitempty"`
	// Spec is the containers' spec (runtime.ContainerSpec, JSON) and the
	// rest is the service record's, as they were.
	Spec      json.RawMessage `json:"spec"`
	Mode      string          `json:"mode,omitempty"`
	AllowFrom []string        `json:"allow_from,omitempty"`
	Update    *UpdateConfig   `json:"update_config,omitempty"`
}

// Key implements Record.
func (h *History) Key() string { return HistoryPrefix + h.Service }

// Kind implements Record.
func (*History) Kind() Kind { return KindHistory }

// Validate implements Record.
func (h *History) Validate() error {
	if err := checkID("history service name", h.Service); err != nil {
		return err
	}
	if len(h.Versions) > HistoryKeep {
		return fmt.Errorf("%w: history of %s has %d versions, more than %d", ErrBadRecord, h.Service, len(h.Versions), HistoryKeep)
	}
	return nil
}

// Add puts v first and keeps the last HistoryKeep versions; v.N is set
// to one more than the newest.
func (h *History) Add(v Version) {
	v.N = 1
	if len(h.Versions) > 0 {
		v.N = h.Versions[0].N + 1
	}
	h.Versions = append([]Version{v}, h.Versions...)
	if len(h.Versions) > HistoryKeep {
		h.Versions = h.Versions[:HistoryKeep]
	}
}

// Find is version n, or false when the history no longer has it.
func (h *History) Find(n int) (Version, bool) {
	for _, v := range h.Versions {
		if v.N == n {
			return v, true
		}
	}
	return Version{}, false
}
