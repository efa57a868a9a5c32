package netns

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/coreos/go-iptables/iptables"
)

// iptablesWait is how long (seconds) an iptables call waits for the xtables
// lock before it gives up, which bounds every call.
const iptablesWait = 5

func newIPTables() (*iptables.IPTables, error) {
	ipt, err := iptables.New(iptables.IPFamily(iptables.ProtocolIPv4), iptables.Timeout(iptablesWait))
	if err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	return ipt, nil
}

// chainSet names a Manager's own chains.
type chainSet struct {
	dnat    string // nat: published ports; from PREROUTING and OUTPUT
	post    string // nat: masquerading; from POSTROUTING
	forward string // filter: from FORWARD
	input   string // filter: from INPUT
}

func chainsFor(prefix string) chainSet {
	return chainSet{
		dnat:    prefix + "DNAT",
		post:    prefix + "POSTROUTING",
		forward: prefix + "FORWARD",
		input:   prefix + "INPUT",
	}
}

// ownedChain is one of our chains and its table.
type ownedChain struct{ table, chain string }

func (c chainSet) owned() []ownedChain {
	return []ownedChain{{"nat", c.dnat}, {"nat", c.post}, {"filter", c.forward}, {"filter", c.input}}
}

// jump is the rule "-j to" at the head of the built-in chain from.
type jump struct{ table, from, to string }

func (c chainSet) jumps() []jump {
	return []jump{
		{"nat", "PREROUTING", c.dnat},
		{"nat", "OUTPUT", c.dnat},
		{"nat", "POSTROUTING", c.post},
		{"filter", "FORWARD", c.forward},
		{"filter", "INPUT", c.input},
	}
}

// chainRules is one of our chains with the rules it holds from setup on.
type chainRules struct {
	table, chain string
	rules        [][]string
}

// staticRules is everything but the per-port DNAT rules. The package comment
// explains each rule's purpose.
func staticRules(cfg Config) []chainRules {
	c := chainsFor(cfg.ChainPrefix)
	br, sub := cfg.Bridge, cfg.Subnet.String()
	post := [][]string{
		{"-s", "127.0.0.0/8", "-o", br, "-j", "MASQUERADE"},
		{"-s", sub, "-o", br, "-m", "conntrack", "--ctstate", "DNAT", "-j", "MASQUERADE"},
	}
	out := "DROP"
	if cfg.Egress {
		post = append(post, []string{"-s", sub, "!", "-d", sub, "-j", "MASQUERADE"})
		out = "ACCEPT"
	}
	return []chainRules{
		{"nat", c.dnat, nil},
		{"nat", c.post, post},
		{"filter", c.forward, [][]string{
			{"-o", br, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
			{"-o", br, "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"},
			{"-i", br, "-o", br, "-j", "DROP"},
			{"-i", br, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
			// Link-local (cloud metadata services live at 169.254.169.254)
			// is never a sandbox's business, egress or not.
			{"-i", br, "-d", "169.254.0.0/16", "-j", "DROP"},
			{"-i", br, "-j", out},
		}},
		// The host itself is not a service to sandboxes: nothing new from
		// the bridge reaches a host socket (the gateway address, anything
		// on 0.0.0.0, loopback via route_localnet); replies to connections
		// the host opened (published ports) pass.
		{"filter", c.input, [][]string{
			{"-i", br, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
			{"-i", br, "-j", "DROP"},
		}},
	}
}

// installChains creates (or empties) our chains, fills them, and only then
// jumps to them, so traffic never meets a half-built chain.
func installChains(ipt *iptables.IPTables, cfg Config) error {
	for _, cr := range staticRules(cfg) {
		if err := ipt.ClearChain(cr.table, cr.chain); err != nil {
			return fmt.Errorf("create chain %s/%s: %w", cr.table, cr.chain, err)
		}
		for _, r := range cr.rules {
			if err := ipt.Append(cr.table, cr.chain, r...); err != nil {
				return fmt.Errorf("add rule %v to %s/%s: %w", r, cr.table, cr.chain, err)
			}
		}
	}
	for _, j := range chainsFor(cfg.ChainPrefix).jumps() {
		if err := ipt.InsertUnique(j.table, j.from, 1, "-j", j.to); err != nil {
			return fmt.Errorf("jump from %s/%s to %s: %w", j.table, j.from, j.to, err)
		}
	}
	return nil
}

// removeChains deletes the jumps to our chains and the chains, with whatever
// DNAT rules they still hold: flushing a chain is one call, where deleting
// its rules one by one would cost 14-33 ms each.
func removeChains(ipt *iptables.IPTables, prefix string) error {
	c := chainsFor(prefix)
	var errs []error
	for _, table := range []string{"nat", "filter"} {
		existing, err := ipt.ListChains(table)
		if err != nil {
			errs = append(errs, fmt.Errorf("list %s chains: %w", table, err))
			continue
		}
		have := make(map[string]bool, len(existing))
		for _, name := range existing {
			have[name] = true
		}
		for _, j := range c.jumps() {
			if j.table != table || !have[j.to] {
				continue
			}
			for range 8 { // a jump inserted twice by hand goes too
				ok, err := ipt.Exists(table, j.from, "-j", j.to)
				if err == nil && ok {
					err = ipt.Delete(table, j.from, "-j", j.to)
				}
				if err != nil {
					errs = append(errs, fmt.Errorf("delete jump %s/%s -> %s: %w", table, j.from, j.to, err))
				}
				if err != nil || !ok {
					break
				}
			}
		}
		for _, oc := range c.owned() {
			if oc.table != table || !have[oc.chain] {
				continue
			}
			if err := ipt.ClearChain(table, oc.chain); err != nil {
				errs = append(errs, fmt.Errorf("flush chain %s/%s: %w", table, oc.chain, err))
				continue
			}
			if err := ipt.DeleteChain(table, oc.chain); err != nil {
				errs = append(errs, fmt.Errorf("delete chain %s/%s: %w", table, oc.chain, err))
			}
		}
	}
	return errors.Join(errs...)
}

// dnatRule is the rule in the DNAT chain that publishes p.
func dnatRule(p PublishedPort) []string {
	r := []string{"-p", p.Proto}
	if p.Host.Addr().IsUnspecified() {
		r = append(r, "-m", "addrtype", "--dst-type", "LOCAL")
	} else {
		r = append(r, "-d", p.Host.Addr().String()+"/32")
	}
	return append(r, "--dport", strconv.Itoa(int(p.Host.Port())),
		"-j", "DNAT", "--to-destination", p.Sandbox.String())
}
