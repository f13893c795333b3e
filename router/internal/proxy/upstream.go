package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// connPool sends plain-HTTP upstream requests on pooled keep-alive connections, in the calling goroutine.
//
// http.Transport runs two goroutines per connection and hands every request and response across them;
// on this data path (one small request, one response, thousands a second) those handoffs cost about a
// third of the router's CPU (docs/benchmarks.md). The pool keeps the stdlib's HTTP/1.1 serialisation
// (Request.Write) and parser (http.ReadResponse) and drops the handoffs. https endpoints go through
// http.Transport.
type connPool struct {
	dialer      net.Dialer
	dialTimeout func() time.Duration
	idleTimeout time.Duration
	maxIdle     int
	mu          sync.Mutex
	idle        map[string][]*pooledConn
	closed      bool
}

type pooledConn struct {
	conn      net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
	reused    bool
}

var longAgo = time.Unix(1, 0)

func newConnPool(dialTimeout func() time.Duration, idleTimeout time.Duration) *connPool {
	p := &connPool{
		dialer:      net.Dialer{KeepAlive: 30 * time.Second},
		dialTimeout: dialTimeout,
		idleTimeout: idleTimeout,
		maxIdle:     1024,
		idle:        map[string][]*pooledConn{},
	}
	go p.sweep()
	return p
}

// sweep closes connections idle past the timeout, so the router, not the upstream, ends them.
func (p *connPool) sweep() {
	period := max(p.idleTimeout/2, 50*time.Millisecond)
	for {
		time.Sleep(period)
		now := time.Now()
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		for addr, conns := range p.idle {
			kept := conns[:0]
			for _, pc := range conns {
				if now.Sub(pc.idleSince) >= p.idleTimeout {
					pc.conn.Close()
				} else {
					kept = append(kept, pc)
				}
			}
			p.idle[addr] = kept
		}
		p.mu.Unlock()
	}
}

func (p *connPool) closeIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, conns := range p.idle {
		for _, pc := range conns {
			pc.conn.Close()
		}
	}
	p.idle = map[string][]*pooledConn{}
}

// get returns the most recently used live idle connection to addr, or a new one.
func (p *connPool) get(ctx context.Context, addr string) (*pooledConn, error) {
	now := time.Now()
	for {
		p.mu.Lock()
		conns := p.idle[addr]
		if len(conns) == 0 {
			p.mu.Unlock()
			break
		}
		pc := conns[len(conns)-1]
		p.idle[addr] = conns[:len(conns)-1]
		p.mu.Unlock()
		// Past the idle timeout the upstream may be closing it; one it already closed (a restart, a FIN
		// that arrived while idle) would fail the request after it was sent, so it is never used.
		if now.Sub(pc.idleSince) >= p.idleTimeout || peerClosed(pc.conn) {
			pc.conn.Close()
			continue
		}
		return pc, nil
	}
	if d := p.dialTimeout(); d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	conn, err := p.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &pooledConn{conn: conn, br: bufio.NewReaderSize(conn, 32<<10), bw: bufio.NewWriterSize(conn, 32<<10)}, nil
}

func (p *connPool) put(pc *pooledConn, addr string) {
	pc.idleSince = time.Now()
	pc.reused = true
	p.mu.Lock()
	if p.closed || len(p.idle[addr]) >= p.maxIdle {
		p.mu.Unlock()
		pc.conn.Close()
		return
	}
	p.idle[addr] = append(p.idle[addr], pc)
	p.mu.Unlock()
}

func hostPort(req *http.Request) string {
	if req.URL.Port() != "" {
		return req.URL.Host
	}
	return net.JoinHostPort(req.URL.Hostname(), "80")
}

// RoundTrip sends req and reads the response head. Cancelling req's context (a read timeout, the client
// leaving) unblocks every read and write on the connection, which is then closed.
func (p *connPool) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	addr := hostPort(req)
	for {
		pc, err := p.get(ctx, addr)
		if err != nil {
			return nil, err
		}
		stop := context.AfterFunc(ctx, func() { pc.conn.SetDeadline(longAgo) })
		err = req.Write(pc.bw)
		if err == nil {
			err = pc.bw.Flush()
		}
		if err != nil {
			stop()
			pc.conn.Close()
			if ctx.Err() != nil {
				return nil, context.Cause(ctx)
			}
			// A write refused on a reused connection: the upstream had closed it, so it read nothing.
			if pc.reused && req.Body == nil {
				continue
			}
			if pc.reused && req.GetBody != nil {
				if req.Body, err = req.GetBody(); err == nil {
					continue
				}
			}
			return nil, err
		}
		resp, err := http.ReadResponse(pc.br, req)
		if err != nil {
			stop()
			pc.conn.Close()
			if ctx.Err() != nil {
				return nil, context.Cause(ctx)
			}
			return nil, err
		}
		resp.Body = &pooledBody{body: resp.Body, pc: pc, pool: p, addr: addr, stop: stop, reusable: !resp.Close && !req.Close}
		return resp, nil
	}
}

// pooledBody returns its connection to the pool when the body was read to its end, else closes it
// (which, mid-stream, makes vLLM abort the generation).
type pooledBody struct {
	body     io.ReadCloser
	pc       *pooledConn
	pool     *connPool
	addr     string
	stop     func() bool
	reusable bool
	eof      bool
	failed   bool
	done     bool
}

func (b *pooledBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.eof = true
	} else if err != nil {
		b.failed = true
	}
	return n, err
}

func (b *pooledBody) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	stopped := b.stop()
	if !b.eof && !b.failed && stopped {
		// A body read exactly to its length has not seen EOF yet: ask without waiting.
		b.pc.conn.SetReadDeadline(time.Now())
		var one [1]byte
		if n, err := b.body.Read(one[:]); n == 0 && errors.Is(err, io.EOF) {
			b.eof = true
		}
	}
	if b.eof && !b.failed && stopped && b.reusable && b.pc.br.Buffered() == 0 {
		b.pc.conn.SetDeadline(time.Time{})
		b.pool.put(b.pc, b.addr)
		return nil
	}
	return b.pc.conn.Close()
}
