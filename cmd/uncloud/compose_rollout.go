package main

import (
	"fmt"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/uncloud-mesh/uncloud/api"
)

// The Compose keys that say how a service rolls out (the health check's
// timings and deploy.update_config) are mapped here, apart from the
// loader, so either can change without the other.

// composeRollout maps s's health check timings and deploy.update_config
// into req, and says who deploys (the CLI's user@host); the warnings name
// what it leaves out.
func composeRollout(req *api.RunRequest, name string, s types.ServiceConfig) []string {
	req.By = cliUser()
	var warnings []string
	if hc := s.HealthCheck; hc != nil {
		req.HealthInterval = composeDuration(hc.Interval)
		req.HealthTimeout = composeDuration(hc.Timeout)
		req.HealthStartPeriod = composeDuration(hc.StartPeriod)
		if hc.Retries != nil {
			req.HealthRetries = int(min(*hc.Retries, 1000))
		}
	}
	if s.Deploy == nil || s.Deploy.UpdateConfig == nil {
		return warnings
	}
	uc := s.Deploy.UpdateConfig
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
	if uc.MaxFailureRatio != 0 {
		warnings = append(warnings, fmt.Sprintf("service %s: deploy.update_config.max_failure_ratio is not supported: any failure fails the rollout", name))
	}
	req.Update = u
	return warnings
}

func composeDuration(d *types.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return time.Duration(*d)
}
