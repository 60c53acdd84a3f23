package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/uncloud-mesh/uncloud/agent"
	"github.com/uncloud-mesh/uncloud/api"
)

type ingressCmd struct {
	Ls ingressLsCmd `cmd:"" help:"List the routes of this machine's ingress: hosts, containers, certificates."`
}

type ingressLsCmd struct {
	Output string `short:"o" enum:"table,json" default:"table" help:"table or json."`
}

func (c ingressLsCmd) Run(g *globals) error {
	return agentShow(g, shortCommand, c.Output, func(ctx context.Context, a *api.Client) (api.IngressStatus, error) {
		return a.Ingress(ctx)
	}, renderIngress)
}

// renderIngress shows the routes, or why there are none.
func renderIngress(st api.IngressStatus) error {
	if !st.Running {
		if st.Error != "" {
			return fmt.Errorf("the ingress of %s did not start: %s", st.Machine, st.Error)
		}
		fmt.Printf("%s has no ingress role (add it: uncloud machine role add %s ingress)\n", st.Machine, st.Machine)
		return nil
	}
	fmt.Printf("ingress on %s: http %s, https %s, ACME %s\n", st.Machine, dash(st.HTTP), dash(st.HTTPS), st.ACME)
	if len(st.Routes) == 0 {
		fmt.Println("no routes: publish a service with -p HOST:PORT/https")
		return nil
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "HOST\tSERVICE\tCONTAINERS\tCERTIFICATE")
	for _, r := range st.Routes {
		var cs []string
		for _, b := range r.Backends {
			s := b.Container + "@" + b.Address
			if b.Down {
				s += "(down)"
			}
			cs = append(cs, s)
		}
		cert := "-"
		if r.Cert != nil {
			cert = r.Cert.State
			if !r.Cert.NotAfter.IsZero() {
				cert += ", expires " + r.Cert.NotAfter.Local().Format(time.DateTime)
			}
			if r.Cert.Error != "" {
				cert += " (last error: " + r.Cert.Error + ")"
			}
		}
		svc := fmt.Sprintf("%s:%d", r.Service, r.Port)
		if len(r.Conflicts) > 0 {
			svc += " (also claimed by " + strings.Join(r.Conflicts, ",") + ")"
		}
		fmt.Fprintf(w, "%s://%s%s\t%s\t%s\t%s\n", r.Protocol, r.Host, r.Path, svc, dash(strings.Join(cs, " ")), cert)
	}
	return w.Flush()
}

// ingressFlags are the agent's ingress settings, used while the machine
// has the ingress role.
type ingressFlags struct {
	HTTP      string `name:"ingress-http" help:"Ingress: plain HTTP listen address (- for off)." default:":80" placeholder:"ADDR"`
	HTTPS     string `name:"ingress-https" help:"Ingress: HTTPS listen address (- for off)." default:":443" placeholder:"ADDR"`
	ACME      string `name:"acme-directory" help:"Ingress: ACME directory URL (default Let's Encrypt)." placeholder:"URL"`
	ACMEEmail string `name:"acme-email" help:"Ingress: contact e-mail for the ACME account." placeholder:"EMAIL"`
	ACMERoots string `name:"acme-roots" help:"Ingress: PEM file of CA certificates to trust for the ACME directory's HTTPS (a private CA)." placeholder:"FILE"`
	Policy    string `name:"ingress-balance" help:"Ingress: round_robin or least_conn." default:"round_robin" enum:"round_robin,least_conn"`
	AccessLog bool   `name:"ingress-access-log" help:"Ingress: log every request."`
}

func (f ingressFlags) options() agent.IngressOptions {
	return agent.IngressOptions{HTTPAddr: f.HTTP, HTTPSAddr: f.HTTPS, ACMEDirectory: f.ACME, ACMEEmail: f.ACMEEmail,
		ACMERoots: f.ACMERoots, Policy: f.Policy, AccessLog: f.AccessLog}
}
