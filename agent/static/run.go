package static

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"

	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/tun"
)

// Options are the command-line additions to a static config file.
type Options struct {
	ConfigPath string
	Userspace  bool              // force netstack, whatever the file says
	Expose     []tun.ExposedPort // added to the file's Expose list
	SOCKS5     string            // overrides the file's SOCKS5
	HTTPProxy  string            // loopback address of the HTTP proxy into the mesh
	// HostUDP is the WireGuard socket a rootless starter bound on the
	// host's network (tun.Config.Socket); nil: bind ListenPort here.
	HostUDP *os.File
	Logger  *slog.Logger
}

// Run brings the mesh up from a static config file and keeps it up
// until ctx ends or the device dies. Each value on reload re-reads the
// file and applies the peer changes; a change to the [Interface] section
// needs a restart and is reported, not half-applied.
func Run(ctx context.Context, opts Options, reload <-chan struct{}) error {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	cfg, err := loadWithOptions(opts, log)
	if err != nil {
		return err
	}
	dev, err := tun.Open(ctx, cfg.Device)
	if err != nil {
		return fmt.Errorf("bring mesh up: %w", err)
	}
	defer dev.Close()
	if err := dev.SyncPeers(cfg.Peers); err != nil {
		return fmt.Errorf("apply peers from %s: %w", opts.ConfigPath, err)
	}

	for _, p := range []struct {
		name, addr string
		serve      func(context.Context, net.Listener, *tun.MeshDialer, *slog.Logger) error
	}{{"SOCKS5", cfg.SOCKS5, tun.ServeSOCKS5}, {"HTTP proxy", cfg.HTTPProxy, tun.ServeHTTPProxy}} {
		if p.addr == "" {
			continue
		}
		if dev.Mode() != tun.ModeNetstack {
			log.Info(p.name+" not started: kernel mode reaches the mesh through the interface", "listen", p.addr)
			continue
		}
		stop, err := startProxy(ctx, p.name, p.addr, dev, p.serve, log)
		if err != nil {
			return err
		}
		defer stop()
	}

	log.Info("mesh up", "mode", dev.Mode(), "link", dev.Link(), "interface", dev.InterfaceName(), "address", dev.Address(),
		"port", dev.ListenPort(), "mtu", dev.MTU(), "public_key", dev.PublicKey(), "peers", len(cfg.Peers))

	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down")
			return nil
		case <-dev.Wait():
			return errors.New("wireguard device stopped unexpectedly")
		case <-reload:
			if err := reapply(opts, cfg.Device, dev, log); err != nil {
				log.Error("config not reloaded", "err", err)
			}
		}
	}
}

func loadWithOptions(opts Options, log *slog.Logger) (Config, error) {
	cfg, err := LoadConfig(opts.ConfigPath)
	if err != nil {
		return Config{}, err
	}
	if st, err := os.Stat(opts.ConfigPath); err == nil && st.Mode().Perm()&0o077 != 0 {
		log.Warn("config file holds a private key but is readable by others; chmod 600 it", "path", opts.ConfigPath, "mode", st.Mode().Perm())
	}
	cfg.Device.Userspace = cfg.Device.Userspace || opts.Userspace
	cfg.Device.Expose = append(cfg.Device.Expose, opts.Expose...)
	if opts.SOCKS5 != "" {
		if cfg.SOCKS5, err = parseLoopback(opts.SOCKS5); err != nil {
			return Config{}, fmt.Errorf("--socks5: %w", err)
		}
	}
	if opts.HTTPProxy != "" {
		if cfg.HTTPProxy, err = parseLoopback(opts.HTTPProxy); err != nil {
			return Config{}, fmt.Errorf("--http-proxy: %w", err)
		}
	}
	cfg.Device.Logger = log
	cfg.Device.Socket = opts.HostUDP
	return cfg, nil
}

func reapply(opts Options, running tun.Config, dev *tun.Device, log *slog.Logger) error {
	cfg, err := loadWithOptions(opts, log)
	if err != nil {
		return err
	}
	if changed := interfaceChanges(running, cfg.Device); changed != "" {
		return fmt.Errorf("[Interface] %s changed: restart the agent to apply it", changed)
	}
	before, _ := dev.Peers()
	if err := dev.SyncPeers(cfg.Peers); err != nil {
		return err
	}
	log.Info("config reloaded", "peers_before", len(before), "peers", len(cfg.Peers))
	return nil
}

// interfaceChanges names the first [Interface] field that differs.
func interfaceChanges(a, b tun.Config) string {
	switch {
	case a.PrivateKey != b.PrivateKey:
		return "PrivateKey"
	case a.Address != b.Address:
		return "Address"
	case a.ListenPort != b.ListenPort:
		return "ListenPort"
	case a.InterfaceName != b.InterfaceName:
		return "Name"
	case a.MTU != b.MTU:
		return "MTU"
	case a.Userspace != b.Userspace:
		return "Userspace"
	case fmt.Sprint(a.Expose) != fmt.Sprint(b.Expose):
		return "Expose"
	}
	return ""
}

// startProxy lets host processes reach the mesh from a netstack machine
// through a SOCKS5 or HTTP proxy. Destinations outside the mesh are
// refused: the proxy is a way into the tunnel, not an open relay. A
// static mesh has no zone of its own, so names go to the host's resolver
// and count only if they resolve into the mesh.
func startProxy(ctx context.Context, name, addr string, dev *tun.Device,
	serve func(context.Context, net.Listener, *tun.MeshDialer, *slog.Logger) error, log *slog.Logger) (stop func(), err error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for the %s on %s: %w", name, addr, err)
	}
	d := &tun.MeshDialer{
		Mesh: meshaddr.Mesh(),
		Resolve: func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		},
		Dial: dev.DialContext,
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := serve(ctx, ln, d, log); err != nil && ctx.Err() == nil {
			log.Error(name+" stopped", "err", err)
		}
	}()
	log.Info(name+" into the mesh", "listen", ln.Addr())
	return func() { cancel(); ln.Close(); <-done }, nil
}
