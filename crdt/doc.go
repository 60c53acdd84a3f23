// Package crdt owns uncloud's replicated state engine: a go-ds-crdt
// Merkle-CRDT key-value store over badger in the agent's data directory, the
// exchange of DAG blocks between machines, the broadcast of new heads over
// gossip, the versioned envelope records are stored in, and a watch API for
// the resolver, the ingress and the WireGuard peer manager. What the records
// are (machines, containers, services, join tokens, ...) and which keys they
// live under is package record's; the store takes any record.Record.
//
// # Layout of one replica
//
// One badger database under <data-dir> holds everything: the CRDT set and
// heads under /crdt, the DAG blocks (boxo blockstore) under /blocks. There is
// no libp2p host and no bitswap. A block a replica lacks is fetched through
// a BlockFetcher (HTTP today, the mutual-TLS machine API later), first from
// the machine that announced the head, then from any other live machine, and
// again after a short bounded backoff if nobody has it yet; every
// received block's CID is recomputed from its bytes before it is stored.
// When a broadcast names a head we lack, the head and all its ancestors we lack
// are requested in one streamed request, so catch-up after a long absence costs
// one round trip, not one per DAG level.
//
// Heads travel over a Gossip (package gossip satisfies it): a named broadcast
// per origin (a newer head set covers an older one, so queues never grow past
// one entry per machine, even on a lone machine), and the current heads in
// gossip's local state so every push/pull is anti-entropy.
//
// # Writer rule (DESIGN §6)
//
// Writes never wait for other machines. Concurrent writes to one key are
// resolved by go-ds-crdt: the value written in the taller DAG branch wins
// (ties: the bytewise larger value), NOT the later write in wall-clock time,
// and a concurrent re-write of a key beats its delete (add-wins). Therefore:
//   - a machine writes only the records it owns: /machines/<its id> and
//     /containers/<its id>/...; so most keys have exactly one writer and
//     "conflicts" are merely ordered updates of that writer;
//   - /services/<name> is written by the command that changes the service;
//     two concurrent commands on two sides of a partition converge to one of
//     the two values, deterministically, but not necessarily the newer one;
//   - a delete can lose to a concurrent re-write: never rely on a delete for
//     security (revocation is an add-only set of its own, DESIGN §4).
//
// # Durability
//
// badger runs with SyncWrites off: a write is in the operating system's page
// cache when Put returns, so it survives kill -9 of the agent (tested), and a
// background flush every second bounds what a power cut can take. A power cut
// loses at most that last second of local writes, and badger recovers a
// consistent prefix; anything already broadcast is re-fetched from peers.
// Fsync per write would cost 10-50 ms on an SD card and wear it out.
//
// # Growth
//
// go-ds-crdt never shrinks its store: every write leaves a DAG block, an
// element entry and, once deleted, a tombstone. See README.md for the numbers
// measured under churn and the snapshot-epoch design that bounds it.
package crdt
