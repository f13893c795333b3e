// kubetune-router: the OpenAI-compatible weighted, sticky, streaming router in front of a ModelDeployment's
// variants. It reads the RouterConfig JSON the operator writes into a ConfigMap and polls it for changes.
//
//	kubetune-router --config /etc/kubetune/router/router.json --port 8080 [--reload-interval 1]
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"kubetune.io/router/internal/config"
	"kubetune.io/router/internal/proxy"
)

type options struct {
	config            string
	host              string
	port              int
	reloadInterval    float64
	logLevel          string
	tokenFile         string
	maxConcurrent     int
	readHeaderTimeout float64
	idleTimeout       float64
	upstreamIdle      float64
	shutdownTimeout   float64
	debugAddr         string
	checkConfig       bool
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("kubetune-router", flag.ContinueOnError)
	fs.StringVar(&o.config, "config", "", "router config (RouterConfig JSON), polled for changes (required)")
	fs.StringVar(&o.host, "host", "0.0.0.0", "listen address")
	fs.IntVar(&o.port, "port", 8080, "listen port (0: any free port, printed on stderr)")
	fs.Float64Var(&o.reloadInterval, "reload-interval", 1, "seconds between config (and token) file polls")
	fs.StringVar(&o.logLevel, "log-level", "INFO", "DEBUG, INFO, WARNING or ERROR")
	fs.StringVar(&o.tokenFile, "token-file", "", "file holding the operator's shared token (from a Secret); when set, the override "+
		"and synthetic headers are honoured only on requests carrying it in "+proxy.TokenHeader)
	fs.IntVar(&o.maxConcurrent, "max-concurrent-requests", 4096, "requests proxied at once; more get 503 at once (0: no cap)")
	fs.Float64Var(&o.readHeaderTimeout, "read-header-timeout", 10, "seconds a client may take to send request headers")
	fs.Float64Var(&o.idleTimeout, "idle-timeout", 120, "seconds an idle client keep-alive connection stays open")
	fs.Float64Var(&o.upstreamIdle, "upstream-idle-timeout", 4, "seconds an idle upstream connection is kept; below vLLM's "+
		"5 s keep-alive, so the router never reuses a socket the server is closing")
	fs.Float64Var(&o.shutdownTimeout, "shutdown-timeout", 290, "seconds in-flight streams get to finish after SIGTERM")
	fs.StringVar(&o.debugAddr, "debug-addr", "", "serve net/http/pprof on this address (e.g. 127.0.0.1:6060); off when empty")
	fs.BoolVar(&o.checkConfig, "check-config", false, "validate --config, print it with defaults applied, exit")
	fs.Bool("no-uvloop", false, "ignored (the Python router's flag)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.config == "" {
		return o, errors.New("--config is required")
	}
	return o, nil
}

func logLevel(name string) slog.Level {
	switch strings.ToUpper(name) {
	case "DEBUG":
		return slog.LevelDebug
	case "WARNING", "WARN":
		return slog.LevelWarn
	case "ERROR", "CRITICAL":
		return slog.LevelError
	}
	return slog.LevelInfo
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func main() {
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel(o.logLevel)})))
	data, err := os.ReadFile(o.config)
	if err != nil {
		slog.Error("router config unreadable", "path", o.config, "error", err)
		os.Exit(1)
	}
	cfg, err := config.Parse(data)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if o.checkConfig {
		out, _ := json.Marshal(cfg)
		fmt.Println(string(out))
		return
	}
	if err := serve(o, cfg, sha256.Sum256(data)); err != nil {
		slog.Error("router stopped", "error", err)
		os.Exit(1)
	}
}

func serve(o options, cfg *config.Config, digest [32]byte) error {
	modelDeployment := ""
	if cfg.ModelDeployment != nil {
		modelDeployment = *cfg.ModelDeployment
	}
	metrics := proxy.NewMetrics(modelDeployment)
	state := proxy.NewState(cfg, metrics)
	handler := proxy.NewHandler(state, metrics, proxy.Options{
		MaxConcurrent:       o.maxConcurrent,
		UpstreamIdleTimeout: seconds(o.upstreamIdle),
		TokenRequired:       o.tokenFile != "",
	})
	defer handler.Close()
	var tokenDigest [32]byte
	readToken := func() {
		if o.tokenFile == "" {
			return
		}
		token, err := os.ReadFile(o.tokenFile)
		if err != nil {
			token = nil // fail closed: without the file nobody may override or mark synthetic traffic
		}
		if d := sha256.Sum256(token); d != tokenDigest || err != nil {
			tokenDigest = d
			handler.SetToken(token)
			if err != nil {
				slog.Warn("token file unreadable: override and synthetic headers ignored", "path", o.tokenFile, "error", err)
			}
		}
	}
	readToken()
	if o.tokenFile == "" {
		slog.Warn("no --token-file: any client may pick a variant or mark its traffic synthetic")
	}

	server := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: seconds(o.readHeaderTimeout),
		IdleTimeout:       seconds(o.idleTimeout),
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelDebug),
	}
	listener, err := net.Listen("tcp", net.JoinHostPort(o.host, strconv.Itoa(o.port)))
	if err != nil {
		return err
	}
	// Tests and benchmarks start the router on port 0 and read the address from this line.
	fmt.Fprintf(os.Stderr, "listening on %s\n", listener.Addr())
	if o.debugAddr != "" {
		go serveDebug(o.debugAddr)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go watch(ctx, o, state, metrics, digest, readToken)
	served := make(chan error, 1)
	go func() { served <- server.Serve(listener) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	// Stop accepting, then let in-flight requests (long generations) finish.
	slog.Info("shutting down")
	drain, cancel := context.WithTimeout(context.Background(), seconds(o.shutdownTimeout))
	defer cancel()
	return server.Shutdown(drain)
}

// watch polls the config file (ConfigMap volumes swap a symlink atomically, so a read sees the old or the
// new file whole) and compares content, not mtime. An invalid file is counted and the old config kept.
func watch(ctx context.Context, o options, state *proxy.State, m *proxy.Metrics, digest [32]byte, readToken func()) {
	ticker := time.NewTicker(seconds(o.reloadInterval))
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		readToken()
		data, err := os.ReadFile(o.config)
		if err != nil {
			slog.Warn("router config unreadable", "path", o.config, "error", err)
			continue
		}
		d := sha256.Sum256(data)
		if bytes.Equal(d[:], digest[:]) {
			continue
		}
		digest = d
		cfg, err := config.Parse(data)
		if err != nil {
			slog.Error("router config rejected, keeping the previous one", "path", o.config, "error", err)
			m.RecordReload("error")
			continue
		}
		if installed, serving := state.InstallIfCurrent(cfg); !installed {
			// The operator pushed a newer one; the kubelet has not synced the file to it yet.
			slog.Info("router config file older than the pushed config, kept", "file", cfg.Revision, "serving", serving)
			continue
		}
		m.RecordReload("ok")
		slog.Info("router config reloaded", "revision", cfg.Revision, "weights", cfg.Weights())
	}
}

func serveDebug(addr string) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	server := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	slog.Error("debug server stopped", "error", server.ListenAndServe())
}
