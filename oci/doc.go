// Package oci owns the machine's image registry for `uncloud image push`:
// an OCI distribution API (go-containerregistry's pkg/registry) served on
// loopback only, whose blobs live on disk under the agent's data dir, and
// the push sessions that say which repository may be used and where a
// blob this machine lacks is fetched from.
//
// How a push uses it: the source machine's Docker pushes the image to the
// source's registry (Docker asks HEAD first and sends only the blobs the
// registry lacks); each target's Docker pulls it from the target's own
// registry, whose session fetches each blob it lacks from the source on
// demand (Fetch, over the machine API), writing it to disk as it streams
// it to Docker. So a target's Docker asks for exactly the layers it lacks,
// and only those cross the mesh.
//
// Blob lifetime, and why (disk use is part of the design):
//   - Blobs that this machine's own Docker pushed (the "pushed" area) are
//     kept: Docker skips a layer only when the registry still has it, and
//     targets fetch through from here. They are collected least recently
//     used first once the area exceeds its cap (--registry-max-bytes), never
//     one used in the last hour (a push in progress). A collected blob costs
//     only a local re-upload over loopback on the next push (the compressed
//     bytes are the same, so targets still recognise it).
//   - Blobs fetched for a target (the "fetched" area) are deleted once that
//     machine's Docker has pulled the image: Docker's layer store has the
//     layers then, and keeping both would double the disk an image costs.
//     Blobs of a push that did not finish are kept for the next push to
//     resume with, and expire a day after their last use.
//   - A blob is written to a temporary file, its digest and size checked,
//     and only then renamed into place: a kill -9 leaves a temporary file
//     (removed at the next start), never a blob with wrong bytes. Stat
//     answers from the file's size: the bytes were checked when it arrived.
//     Pushed blobs are synced before the rename; fetched ones, which live
//     for one pull, are not (see Writer.Commit).
//
// Nothing but loopback can reach the registry, and even there only the
// repositories of open sessions (random names, one per push) answer, so
// another local user cannot read pushed images or fill the disk.
//
// ggcr keeps a chunked blob upload (PATCH) in memory until its PUT, under
// one lock: measured, a 41 MiB image in 10 MiB layers cost the source's
// agent 77 MiB of peak RSS, and an upload never finished stays in memory.
// So this package takes uploads itself (uploads.go), streaming each to a
// temporary file of the store; ggcr serves everything else.
package oci
