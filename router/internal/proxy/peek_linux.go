//go:build linux

package proxy

import (
	"net"
	"syscall"
)

// peerClosed reports whether an idle connection's peer has closed it (or sent something unasked), with
// one non-blocking peek: no byte is consumed.
func peerClosed(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	closed := false
	var buf [1]byte
	err = raw.Read(func(fd uintptr) bool {
		n, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		closed = n == 0 && rerr == nil || n > 0 || rerr != nil && rerr != syscall.EAGAIN
		return true // never wait for readiness
	})
	return closed || err != nil
}
