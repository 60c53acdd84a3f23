package main

import (
	"slices"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/uncloud-mesh/uncloud/api"
)

// The Compose keys that say how a service rolls out (the health check's
// timings and deploy.update_config) are mapped here, apart from the
// loader, so either can change without the other.

// composeRollout maps s's health check timings and deploy.update_config
// into req, and says who deploys (the CLI's user@host). What it leaves
// out (max_failure_ratio) is warned of by composeKeys.
func composeRollout(req *api.RunRequest, s types.ServiceConfig) {
	req.By = cliUser()
	if hc := s.HealthCheck; hc != nil {
		req.HealthInterval = composeDuration(hc.Interval)
		req.HealthTimeout = composeDuration(hc.Timeout)
		req.HealthStartPeriod = composeDuration(hc.StartPeriod)
		if hc.Retries != nil {
			req.HealthRetries = int(min(*hc.Retries, 1000))
		}
	}
	if s.Deploy == nil || s.Deploy.UpdateConfig == nil {
		return
	}
	uc := s.Deploy.UpdateConfig
	if !validRolloutValue(uc.FailureAction, "rollback", "pause") || !validRolloutValue(uc.Order, "start-first", "stop-first") {
		return // warned of by composeValues, ignored as a whole
	}
	u := &api.UpdateConfig{Delay: time.Duration(uc.Delay), Monitor: time.Duration(uc.Monitor), Order: uc.Order,
		FailureAction: uc.FailureAction}
	if uc.Parallelism != nil {
		if *uc.Parallelism == 0 {
			// Compose's 0 means all at once.
			u.Parallelism = 100
		} else {
			u.Parallelism = int(min(*uc.Parallelism, 100))
		}
	}
	req.Update = u
}

func composeDuration(d *types.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return time.Duration(*d)
}

func validRolloutValue(v string, allowed ...string) bool {
	return v == "" || slices.Contains(allowed, v)
}
