package record

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
