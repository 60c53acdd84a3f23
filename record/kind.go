package record

import (
	"fmt"
	"strings"
)

// Kind names a record type in the stored envelope.
type Kind string

// The record kinds.
const (
	KindMachine   Kind = "machine"
	KindContainer Kind = "container"
	KindService   Kind = "service"
	KindToken     Kind = "token"
	KindRevoked   Kind = "revoked"
)

// Kind implements Record.
func (*Machine) Kind() Kind { return KindMachine }

// Kind implements Record.
func (*Container) Kind() Kind { return KindContainer }

// Kind implements Record.
func (*Service) Kind() Kind { return KindService }

// Kind implements Record.
func (*Token) Kind() Kind { return KindToken }

// Kind implements Record.
func (*Revoked) Kind() Kind { return KindRevoked }

// KindInfo is what a store needs to know about a kind: where its records
// live, which encoding version this binary writes and reads, and how to
// make an empty one to decode into. The version sits here, next to the
// struct, because it tracks the struct: adding an optional field keeps it,
// changing the meaning of a field bumps it.
type KindInfo struct {
	Prefix  string
	Version int
	New     func() Record
}

// Kinds lists every kind, in a fixed order.
func Kinds() []Kind {
	return []Kind{KindMachine, KindContainer, KindService, KindToken, KindRevoked, KindCert, KindHistory, KindSecret}
}

// Lookup returns what is known about k; false for a kind this binary does
// not know (a newer machine's, or garbage).
func Lookup(k Kind) (KindInfo, bool) {
	switch k {
	case KindMachine:
		return KindInfo{MachinesPrefix, 1, func() Record { return &Machine{} }}, true
	case KindContainer:
		return KindInfo{ContainersPrefix, 1, func() Record { return &Container{} }}, true
	case KindService:
		return KindInfo{ServicesPrefix, 1, func() Record { return &Service{} }}, true
	case KindToken:
		return KindInfo{TokensPrefix, 1, func() Record { return &Token{} }}, true
	case KindRevoked:
		return KindInfo{RevokedPrefix, 1, func() Record { return &Revoked{} }}, true
	case KindCert:
		return KindInfo{CertsPrefix, 1, func() Record { return &Cert{} }}, true
	case KindHistory:
		return KindInfo{HistoryPrefix, 1, func() Record { return &History{} }}, true
	case KindSecret:
		return KindInfo{SecretsPrefix, 1, func() Record { return &Secret{} }}, true
	}
	return KindInfo{}, false
}

// CheckKey rejects a key that is not under one kind's prefix with an
// identity after it, so nothing outside the record scheme is read,
// written or deleted.
func CheckKey(key string) error {
	var prefixes []string
	for _, k := range Kinds() {
		info, _ := Lookup(k)
		if strings.HasPrefix(key, info.Prefix) && len(key) > len(info.Prefix) {
			return nil
		}
		prefixes = append(prefixes, info.Prefix)
	}
	return fmt.Errorf("%w: %q is not under any of %s", ErrBadKey, key, strings.Join(prefixes, ", "))
}
