package api

// ImageProgress is one step of getting an image onto one machine: a pull
// from a registry, or a push between machines. Lines of it stream back to
// the CLI, which draws a bar per machine on a terminal and prints the
// milestones elsewhere.
type ImageProgress struct {
	Machine string `json:"machine"`
	Image   string `json:"image"`
	// Status is resolving, pulling, sending, done (the image is there
	// now), present (it was there already) or failed (with Error).
	Status string `json:"status"`
	// Layers and LayersDone count the image's layers once the registry
	// said how many there are; LayersDone includes those the machine had.
	Layers     int `json:"layers,omitempty"`
	LayersDone int `json:"layers_done,omitempty"`
	// Bytes have arrived so far out of Total (0 while unknown).
	Bytes int64 `json:"bytes,omitempty"`
	Total int64 `json:"total,omitempty"`
	// Digest is what the machine runs: the registry's manifest digest,
	// or the local image ID where no registry knows the image.
	Digest string `json:"digest,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Final says whether p is the last word for its machine.
func (p ImageProgress) Final() bool {
	return p.Status == "done" || p.Status == "present" || p.Status == "failed"
}
