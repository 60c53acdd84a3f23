package record

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Record is one typed thing in the shared state. Each kind lives under its
// own path prefix; Key derives the full path from the record's identity, so
// a record cannot be stored under somebody else's key.
//
// The structs are deliberately minimal: later work adds fields. Adding an
// optional field keeps the encoding version; changing the meaning of a field
// bumps it (see KindInfo).
type Record interface {
	// Key is the path the record is stored under.
	Key() string
	// Kind names the record type in the stored envelope.
	Kind() Kind
	// Validate rejects identities that would break the key scheme.
	Validate() error
}

// Path prefixes of the record kinds.
const (
	MachinesPrefix   = "/machines/"
	ContainersPrefix = "/containers/"
	ServicesPrefix   = "/services/"
	TokensPrefix     = "/tokens/"
	RevokedPrefix    = "/revoked/"
)

// Machine is a machine of the network, written by that machine only.
type Machine struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Subnet is the machine's /24 in meshaddr.Subnet's String form
	// ("10.210.3.0/24"); read it with meshaddr.ParseSubnet.
	Subnet string `json:"subnet,omitempty"`
	// WireGuardKey and IdentityKey are public keys (base64).
	WireGuardKey string `json:"wireguard_key,omitempty"`
	IdentityKey  string `json:"identity_key,omitempty"`
	// SealKey is the machine's X25519 sealing key (base64), what the
	// ingress seals certificate storage for; see package sealing.
	SealKey string `json:"seal_key,omitempty"`
	// Endpoints are candidate underlay endpoints, "host:port". Rarely
	// changing ones only: the endpoint in use travels in gossip.
	Endpoints []string `json:"endpoints,omitempty"`
	// Roles are what the machine does besides running containers, e.g.
	// "ingress". Sorted, no duplicates.
	Roles []string `json:"roles,omitempty"`
	// Labels are the machine's own key=value labels, for placement
	// constraints (node.labels.KEY==VALUE); set with
	// `uncloud machine label add`.
	Labels map[string]string `json:"labels,omitempty"`
	// Membership is the statement that admitted the machine; readers
	// ignore a machine record without one that verifies.
	Membership *Membership `json:"membership,omitempty"`
}

// Key implements Record.
func (m *Machine) Key() string { return MachinesPrefix + m.ID }

// Container is a container on a machine, written by that machine only.
type Container struct {
	MachineID string `json:"machine_id"`
	ID        string `json:"id"`
	Name      string `json:"name"`
	Service   string `json:"service,omitempty"`
	Image     string `json:"image,omitempty"`
	// ImageDigest is the digest the service's image was pinned to: a
	// registry manifest digest, or a local image ID.
	ImageDigest string `json:"image_digest,omitempty"`
	// Address is the container's mesh address, e.g. "10.210.3.7".
	Address string `json:"address,omitempty"`
	// State is Docker's: created, running, restarting, paused, exited, dead.
	State string `json:"state,omitempty"`
	// Health is Docker's health status where the container has a health
	// check: starting, healthy or unhealthy; empty otherwise.
	Health string `json:"health,omitempty"`
	// Ports are the container ports the service publishes, for SRV
	// answers and ingress routes.
	Ports   []ContainerPort `json:"ports,omitempty"`
	Created time.Time       `json:"created,omitzero"`
	// Draining says the container is about to be removed by a rollout:
	// it gets no new traffic, and what it serves now may finish.
	Draining bool `json:"draining,omitempty"`
}

// ContainerPort is a port a container listens on.
type ContainerPort struct {
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"` // "tcp" or "udp"
	// Name is the published name, e.g. "http" or a host name for ingress.
	Name string `json:"name,omitempty"`
}

// Key implements Record.
func (c *Container) Key() string { return ContainersPrefix + c.MachineID + "/" + c.ID }

// Service is a service, written by the command that changes it.
type Service struct {
	Name string `json:"name"`
	// Mode is "replicated" or "global".
	Mode string `json:"mode,omitempty"`
	// Ports are published ports, e.g. "app.example.com:8080/https".
	Ports []string `json:"ports,omitempty"`
	// Spec is how each container is made (runtime.ContainerSpec, JSON),
	// so any machine can scale the service.
	Spec json.RawMessage `json:"spec,omitempty"`
	// AllowFrom is the service's security group (see allowfrom.go);
	// empty means open inside the network.
	AllowFrom []string `json:"allow_from,omitempty"`
	// VolumeMachines are the machines (IDs) where the service's named
	// volumes were made: later replicas and updates stay on them, even
	// while the service has no container there.
	VolumeMachines []string `json:"volume_machines,omitempty"`
	// Update is how its rollouts go; nil: the defaults.
	Update *UpdateConfig `json:"update_config,omitempty"`
}

// Key implements Record.
func (s *Service) Key() string { return ServicesPrefix + s.Name }

// Token is the public part of a join token; the secret never enters the state.
type Token struct {
	ID string `json:"id"`
	// Issuer is the machine that issued it and alone counts its uses.
	Issuer string `json:"issuer"`
	// PublicKey is the public half of the one-time WireGuard key.
	PublicKey string    `json:"public_key"`
	Expires   time.Time `json:"expires"`
}

// Key implements Record.
func (t *Token) Key() string { return TokensPrefix + t.ID }

// Revoked marks a removed machine's keys, forever. It is add-only: nothing
// ever deletes it, so unlike a deleted machine record (which a concurrent
// re-write by a partitioned machine would bring back) it cannot be undone
// by a merge. Peers, the machine API and the agent all check it.
type Revoked struct {
	MachineID    string    `json:"machine_id"`
	Name         string    `json:"name,omitempty"`
	WireGuardKey string    `json:"wireguard_key"`
	IdentityKey  string    `json:"identity_key"`
	By           string    `json:"by,omitempty"` // machine that ran the removal
	At           time.Time `json:"at"`
	// Kept are the signatures of the removed machine (as digests, see
	// trust.Digest) that the remover held and still believes: what the
	// machine signed while it was trusted. Any other signature of it is
	// void, so it cannot sign its way back in after the fact.
	Kept []string `json:"kept,omitempty"`
	// Membership is the removed machine's own, so the machines it admitted
	// still chain to the root once its record is gone.
	Membership *Membership `json:"membership,omitempty"`
}

// Key implements Record.
func (r *Revoked) Key() string { return RevokedPrefix + r.MachineID }

func (r *Revoked) Validate() error { return checkID("revoked machine id", r.MachineID) }

// Errors of record validation; test with errors.Is.
var (
	ErrBadKey    = errors.New("bad record key")
	ErrBadRecord = errors.New("bad record")
)

// checkID rejects identity parts that would break the path scheme.
func checkID(what, id string) error {
	if id == "" || strings.ContainsAny(id, "/\x00") || id == "." || id == ".." {
		return fmt.Errorf("%w: %s %q", ErrBadRecord, what, id)
	}
	return nil
}

func (m *Machine) Validate() error { return checkID("machine id", m.ID) }

func (c *Container) Validate() error {
	return errors.Join(checkID("machine id", c.MachineID), checkID("container id", c.ID))
}

func (s *Service) Validate() error { return checkID("service name", s.Name) }

func (t *Token) Validate() error { return checkID("token id", t.ID) }
