package api

// The paths of `uncloud image ls|rm|prune`, kept apart from paths.go so
// their wire format stays next to the calls that use it. Like every
// path, once shipped they do not change.
const (
	PathImageList  = "/v1/images/ls"    // GET ?machine=…: ImageList
	PathImageRm    = "/v1/images/rm"    // POST ImageRemoveRequest: ImageRemoveResult
	PathImagePrune = "/v1/images/prune" // POST ImagePruneRequest: ImagePruneResult

	MachinePathRuntimeImageList  = "/v1/runtime/images/ls"    // GET: runtime.ImageList
	MachinePathRuntimeImageRm    = "/v1/runtime/images/rm"    // POST MachineImageRemove: runtime.ImageRemoval
	MachinePathRuntimeImagePrune = "/v1/runtime/images/prune" // POST runtime.PruneOptions: runtime.PruneReport
)
