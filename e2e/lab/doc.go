// Package lab builds throw-away multi-host networks out of Linux network
// namespaces so that end-to-end tests can run the real uncloud binary on
// several "machines" on one box.
//
// A Lab is one test's world:
//
//   - an "internet" namespace holding a bridge (br0, 198.18.0.1/16). Keeping
//     the bridge out of the root namespace matters: the root namespace's
//     firewall belongs to Docker, whose FORWARD policy is DROP, and nothing we
//     do here may touch the host's own networking;
//   - hosts, each a namespace with one interface eth0 on that internet
//     (198.18.1.N/16) or behind a NAT router, and a default route via the
//     router address 198.18.0.1, so that a mesh packet escaping the tunnel
//     really would leave in clear text (and the Counter would see it);
//   - optional NAT routers (a namespace with nftables masquerade, either
//     endpoint-independent or fully random, that is, symmetric), with the
//     host on a private LAN 198.19.N.0/24 behind it;
//   - optional tc netem delay and loss, when the kernel has sch_netem;
//   - optional IPv6: Host.AddIPv6 gives a host on the internet 2001:db8:18::A:B
//     next to its 198.18.A.B (the bridge then answers as 2001:db8:18::1),
//     and Lab.BlockIPv4 drops IPv4 between hosts on the bridge, so they can
//     only talk over IPv6.
//
// Every name starts with "ul", embeds the creating process id and a random
// tag, and is at most 15 characters (the kernel's limit for interface names;
// namespace names are kept as short for `ip netns list` readability). Close
// undoes everything; New first sweeps leftovers of earlier runs whose
// creating process is gone (a test binary killed by a timeout never runs its
// cleanups).
//
// Each host also has its own /etc/uncloud, /var/lib/uncloud and /run/uncloud
// (bind mounts in the private mount namespace of `ip netns exec`), so
// agents keep separate state and sockets at their default paths.
//
// Hosts run commands (Host.Command, Host.Run), long-running processes that are
// killed on Close (Host.Start), the uncloud agent (Host.StartAgent), and Go
// code inside their namespace: the lab re-executes the current binary with
// UNCLOUD_LAB_HELPER set, so a test binary must call Main from TestMain and a
// command must call HelperMain first thing in main.
package lab
