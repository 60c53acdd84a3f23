package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/uncloud-mesh/uncloud/api"
)

type dnsCmd struct {
	Ls    dnsLsCmd    `cmd:"" help:"List the names this machine's resolver answers now (only machines it reaches, containers that run)."`
	Query dnsQueryCmd `cmd:"" help:"Ask this machine's resolver a question, e.g. 'uncloud dns query web.internal' or '_http._tcp.web.internal SRV'."`
}

type dnsLsCmd struct {
	Output string `short:"o" enum:"table,json" default:"table" help:"table or json."`
}

func (c dnsLsCmd) Run(g *globals) error {
	return agentShow(g, shortCommand, c.Output, func(ctx context.Context, a *api.Client) (api.DNSNames, error) {
		return a.DNSNames(ctx)
	}, renderDNSNames)
}

// renderDNSNames shows the names and their records as a table.
func renderDNSNames(n api.DNSNames) error {
	fmt.Printf("Serving on %s; other names go to %s.\n", orNone(n.Listen), orNone(n.Upstreams))
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tTYPE\tRECORDS\tSEEN BY")
	for _, e := range n.Names {
		seen := "all"
		if e.Project != "" {
			seen = "project " + e.Project + "'s containers"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", e.Name, e.Type, strings.Join(e.Records, ", "), seen)
	}
	return w.Flush()
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	return strings.Join(s, ", ")
}

type dnsQueryCmd struct {
	Name   string `arg:"" help:"Name to look up, e.g. web.internal."`
	Type   string `arg:"" optional:"" default:"A" help:"Record type: A (default), AAAA, SRV, PTR, ..."`
	Output string `short:"o" enum:"text,json" default:"text" help:"text or json."`
}

func (c dnsQueryCmd) Run(g *globals) error {
	return agentShow(g, shortCommand, c.Output, func(ctx context.Context, ac *api.Client) (api.DNSAnswer, error) {
		return ac.DNSQuery(ctx, c.Name, c.Type)
	}, renderDNSAnswer)
}

// renderDNSAnswer shows the answer in dig's sections.
func renderDNSAnswer(a api.DNSAnswer) error {
	fmt.Printf("status: %s\n", a.Rcode)
	for _, sec := range []struct {
		name string
		rrs  []string
	}{{"answer", a.Answer}, {"authority", a.Authority}, {"additional", a.Additional}} {
		if len(sec.rrs) > 0 {
			fmt.Printf(";; %s\n%s\n", sec.name, strings.Join(sec.rrs, "\n"))
		}
	}
	return nil
}
