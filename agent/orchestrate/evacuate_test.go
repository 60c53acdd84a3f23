package orchestrate

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/uncloud-mesh/uncloud/api"
)

func TestEvacuate(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setup runs services (m2 is the machine that leaves).
		setup func(t *testing.T, r *rig)
		// moves are the plan's moves as "service to-machine", sorted.
		moves   []string
		refused string // in the plan's refusals and Evacuate's error
		stay    int
		errText string // in Evacuate's error (the plan is fine)
		// after is where each service runs afterwards.
		after map[string][]string
	}{
		{name: "replicas spread over the others, the one already there counts",
			setup: func(t *testing.T, r *rig) {
				r.run(t, api.RunRequest{Name: "web", Image: "nginx:1", Replicas: 2, Machines: []string{"m2"}})
				r.run(t, api.RunRequest{Name: "api", Image: "nginx:1", Replicas: 2, Machines: []string{"m2", "m3"}})
			},
			moves: []string{"api m1", "web m1", "web m3"},
			after: map[string][]string{"web": {"m1", "m3"}, "api": {"m1", "m3"}}},
		{name: "a constraint to the leaving machine refuses all, nothing changes",
			setup: func(t *testing.T, r *rig) {
				r.run(t, api.RunRequest{Name: "web", Image: "nginx:1", Machines: []string{"m2"}})
				r.run(t, api.RunRequest{Name: "pinned", Image: "nginx:1", Constraints: []string{"node.hostname==m2"}})
			},
			moves:   []string{"web m1"},
			refused: "no other machine can take pinned: ",
			after:   map[string][]string{"web": {"m2"}, "pinned": {"m2"}}},
		{name: "a constraint the others meet",
			setup: func(t *testing.T, r *rig) {
				r.run(t, api.RunRequest{Name: "web", Image: "nginx:1", Constraints: []string{"node.hostname!=m1"}, Machines: []string{"m2"}})
			},
			moves: []string{"web m3"},
			after: map[string][]string{"web": {"m3"}}},
		{name: "a global service is not moved",
			setup: func(t *testing.T, r *rig) {
				r.run(t, api.RunRequest{Name: "agent", Image: "nginx:1", Mode: "global"})
			},
			stay:  1,
			after: map[string][]string{"agent": {"m1", "m2", "m3"}}},
		{name: "a replacement that exits undoes the move",
			setup: func(t *testing.T, r *rig) {
				r.run(t, api.RunRequest{Name: "web", Image: "nginx:1", Replicas: 2, Machines: []string{"m2"}})
				r.engine.started["m3"] = [2]string{"exited", ""}
			},
			moves:   []string{"web m1", "web m3"},
			errText: "exited instead of running",
			after:   map[string][]string{"web": {"m2", "m2"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, newFleet(), Config{})
			tc.setup(t, r)
			r.engine.forget()
			ctx := context.Background()
			plan, err := r.o.Evacuate(ctx, api.EvacuateRequest{Machine: "m2", DryRun: true})
			if err != nil {
				t.Fatal(err)
			}
			var moves []string
			for _, m := range plan.Moves {
				moves = append(moves, m.Service+" "+m.To)
			}
			slices.Sort(moves)
			if !slices.Equal(moves, tc.moves) {
				t.Errorf("plan moves %v, want %v", moves, tc.moves)
			}
			if len(plan.Stay) != tc.stay {
				t.Errorf("stay %v, want %d", plan.Stay, tc.stay)
			}
			if got := strings.Join(plan.Refused, "; "); tc.refused == "" && got != "" || !strings.Contains(got, tc.refused) {
				t.Errorf("refused %q, want %q", got, tc.refused)
			}
			if ops := r.engine.ops("create"); len(ops) > 0 {
				t.Errorf("a dry run created %v", ops)
			}
			_, err = r.o.Evacuate(ctx, api.EvacuateRequest{Machine: "m2"})
			want := tc.refused + tc.errText
			switch {
			case want == "" && err != nil:
				t.Fatalf("evacuate: %v", err)
			case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
				t.Fatalf("evacuate: %v, want it to say %q", err, want)
			}
			if tc.refused != "" {
				if ops := append(r.engine.ops("create"), r.engine.ops("act")...); len(ops) > 0 {
					t.Errorf("a refused evacuation called %v", ops)
				}
			}
			for svc, on := range tc.after {
				if got := r.placement(t, svc); !slices.Equal(got, on) {
					t.Errorf("%s on %v, want %v", svc, got, on)
				}
			}
			// Every old container went only after every replacement was made.
			lastCreate, firstRemove := -1, -1
			for i, c := range r.engine.calls {
				if c.Op == "create" {
					lastCreate = i
				}
				if c.Op == "act" && c.Action == "remove" && c.Machine == "m2" && firstRemove < 0 {
					firstRemove = i
				}
			}
			if firstRemove >= 0 && firstRemove < lastCreate {
				t.Errorf("a container of m2 removed (call %d) before the last replacement was made (call %d)", firstRemove, lastCreate)
			}
		})
	}
}
