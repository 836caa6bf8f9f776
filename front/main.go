// moorage-front terminates gRPC for `moorage sidecar` and hands every call, as frames, to the Python sidecar
// over one local stream socket the sidecar created and passed in (--bridge-fd).
//
// Why: grpc.aio's per-message cost was about half of the sidecar's CPU; grpc-go does the HTTP/2 and gRPC work
// (framing, flow control, deadlines, TLS) off the Python interpreter's lock, and the sidecar sees one byte
// stream of small frames it decodes in batches. The front knows no .proto: it forwards any method by its full
// name with the raw request bytes and metadata, and returns what the sidecar answers (messages, then a status).
// Every semantic (authentication, decoding, the engine, the store) stays in the sidecar.
//
// The frame format (little-endian) is documented in moorage/front.py, which owns it; this is its other end.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

const (
	frameCall     = 1 // front -> sidecar: a new call
	frameCancel   = 2 // front -> sidecar: the client cancelled or its deadline passed
	frameMessage  = 3 // sidecar -> front: one response message
	frameStatus   = 4 // sidecar -> front: the call's final status (u32 code, then the message)
	frameUnary    = 5 // sidecar -> front: the one response message and status OK
	frameShutdown = 6 // sidecar -> front: stop accepting calls, let the running ones finish

	headerSize   = 9 // u32 length (of what follows it), u8 type, u32 call id
	maxFrameSize = 1 << 31

	// deadlineMargin: a call with a deadline ends this much (at most a twentieth of its time) before grpc-go's
	// transport would end it. At the deadline the transport resets the stream on a timer of its own (RST_STREAM
	// CANCEL), and the status a handler returns at the same instant races that timer (both fire together; on one
	// P the goroutine readied last runs first). A client maps a reset to DEADLINE_EXCEEDED only when its own clock
	// says the deadline has passed, and grpc-core's millisecond-granular clock sometimes does not: it reported
	// CANCELLED. Ending first sends the status in the trailers (and stops the transport's timer), as grpc's own
	// servers do; the client's deadline is itself a little earlier than the server's (the header's transit).
	deadlineMargin = 20 * time.Millisecond
)

// rawCodec passes message bytes through: the front never parses a message.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	b := v.(*[]byte)
	*b = append((*b)[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

type frame struct {
	kind byte
	data []byte
}

// call is one RPC in flight: the frames the sidecar sent for it, in order, for its handler goroutine.
type call struct {
	mu     sync.Mutex
	queue  []frame
	signal chan struct{}
}

func (c *call) push(f frame) {
	c.mu.Lock()
	c.queue = append(c.queue, f)
	c.mu.Unlock()
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

func (c *call) take() []frame {
	c.mu.Lock()
	q := c.queue
	c.queue = nil
	c.mu.Unlock()
	return q
}

type bridge struct {
	conn    net.Conn
	out     chan []byte
	gone    chan struct{} // closed when the sidecar's end closed: every call ends UNAVAILABLE
	mu      sync.Mutex
	calls   map[uint32]*call
	next    uint32
	servers []*grpc.Server
}

func newBridge(conn net.Conn) *bridge {
	return &bridge{conn: conn, out: make(chan []byte, 4096), gone: make(chan struct{}), calls: map[uint32]*call{}}
}

func (b *bridge) send(f []byte) {
	select {
	case b.out <- f:
	case <-b.gone:
	}
}

// writeLoop batches frames: whatever is queued when the socket is ready goes in one write.
func (b *bridge) writeLoop() {
	w := bufio.NewWriterSize(b.conn, 256<<10)
	for {
		var f []byte
		select {
		case f = <-b.out:
		case <-b.gone:
			return
		}
		_, err := w.Write(f)
		for err == nil && len(b.out) > 0 {
			_, err = w.Write(<-b.out)
		}
		if err == nil {
			err = w.Flush()
		}
		if err != nil {
			b.lost(fmt.Sprintf("writing to the sidecar failed: %v", err))
			return
		}
	}
}

func (b *bridge) readLoop() {
	r := bufio.NewReaderSize(b.conn, 256<<10)
	header := make([]byte, headerSize)
	for {
		if _, err := io.ReadFull(r, header); err != nil {
			if errors.Is(err, io.EOF) {
				b.lost("")
			} else {
				b.lost(fmt.Sprintf("reading from the sidecar failed: %v", err))
			}
			return
		}
		length := binary.LittleEndian.Uint32(header[0:4])
		kind := header[4]
		id := binary.LittleEndian.Uint32(header[5:9])
		if length < 5 || length > maxFrameSize {
			b.lost(fmt.Sprintf("a frame from the sidecar has an impossible length %d", length))
			return
		}
		data := make([]byte, length-5)
		if _, err := io.ReadFull(r, data); err != nil {
			b.lost(fmt.Sprintf("reading from the sidecar failed: %v", err))
			return
		}
		switch kind {
		case frameMessage, frameStatus, frameUnary:
			b.mu.Lock()
			c := b.calls[id]
			b.mu.Unlock()
			if c != nil { // else the call already ended (cancelled): nothing waits for it
				c.push(frame{kind, data})
			}
		case frameShutdown:
			for _, s := range b.servers {
				go s.GracefulStop()
			}
		default:
			b.lost(fmt.Sprintf("the sidecar sent a frame of unknown type %d", kind))
			return
		}
	}
}

// lost ends every call UNAVAILABLE and the process: without the sidecar there is nothing to serve.
func (b *bridge) lost(why string) {
	if why != "" {
		fmt.Fprintf(os.Stderr, "moorage-front: %s; exiting\n", why)
	}
	close(b.gone)
	for _, s := range b.servers {
		go s.Stop()
	}
	time.AfterFunc(300*time.Millisecond, func() { os.Exit(0) })
}

func (b *bridge) register() (uint32, *call) {
	c := &call{signal: make(chan struct{}, 1)}
	b.mu.Lock()
	b.next++
	id := b.next
	b.calls[id] = c
	b.mu.Unlock()
	return id, c
}

func (b *bridge) unregister(id uint32) {
	b.mu.Lock()
	delete(b.calls, id)
	b.mu.Unlock()
}

func putU16(buf []byte, n int) []byte { return binary.LittleEndian.AppendUint16(buf, uint16(n)) }

func peerName(a net.Addr) string {
	if a == nil {
		return ""
	}
	switch t := a.(type) {
	case *net.TCPAddr:
		if t.IP.To4() != nil {
			return "ipv4:" + t.String()
		}
		return "ipv6:" + t.String()
	case *net.UnixAddr:
		return "unix:" + t.Name
	}
	return a.Network() + ":" + a.String()
}

func callFrame(id uint32, method, peer string, timeoutMicros int64, md metadata.MD, req []byte) []byte {
	size := headerSize + 2 + len(method) + 2 + len(peer) + 8 + 2 + len(req)
	n := 0
	for k, vs := range md {
		if skipHeader(k) {
			continue
		}
		for _, v := range vs {
			size += 2 + len(k) + 4 + len(v)
			n++
		}
	}
	buf := make([]byte, 4, size)
	buf = append(buf, frameCall)
	buf = binary.LittleEndian.AppendUint32(buf, id)
	buf = putU16(buf, len(method))
	buf = append(buf, method...)
	buf = putU16(buf, len(peer))
	buf = append(buf, peer...)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(timeoutMicros))
	buf = putU16(buf, n)
	for k, vs := range md {
		if skipHeader(k) {
			continue
		}
		for _, v := range vs {
			buf = putU16(buf, len(k))
			buf = append(buf, k...)
			buf = binary.LittleEndian.AppendUint32(buf, uint32(len(v)))
			buf = append(buf, v...)
		}
	}
	buf = append(buf, req...)
	binary.LittleEndian.PutUint32(buf[0:4], uint32(len(buf)-4))
	return buf
}

// skipHeader: what grpc's own servers do not show a servicer as invocation metadata.
func skipHeader(k string) bool {
	return strings.HasPrefix(k, ":") || k == "content-type" || k == "te" || strings.HasPrefix(k, "grpc-")
}

func controlFrame(kind byte, id uint32) []byte {
	buf := make([]byte, 0, headerSize)
	buf = binary.LittleEndian.AppendUint32(buf, 5)
	buf = append(buf, kind)
	return binary.LittleEndian.AppendUint32(buf, id)
}

// handle forwards one call of any method: its request to the sidecar, the sidecar's answer to the client.
func (b *bridge) handle(_ any, ss grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(ss)
	if !ok {
		return status.Error(codes.Internal, "no method name")
	}
	var req []byte
	if err := ss.RecvMsg(&req); err != nil {
		if errors.Is(err, io.EOF) {
			return status.Error(codes.InvalidArgument, "the call carried no request message")
		}
		return err
	}
	ctx := ss.Context()
	timeout := int64(-1)
	var expired <-chan time.Time // the call's own end, a little before the transport's (see deadlineMargin)
	if d, ok := ctx.Deadline(); ok {
		left := time.Until(d)
		left -= min(deadlineMargin, left/20)
		timeout = max(left.Microseconds(), 0)
		timer := time.NewTimer(left)
		defer timer.Stop()
		expired = timer.C
	}
	md, _ := metadata.FromIncomingContext(ctx)
	var addr net.Addr
	if p, ok := peer.FromContext(ctx); ok {
		addr = p.Addr
	}
	id, c := b.register()
	defer b.unregister(id)
	b.send(callFrame(id, method, peerName(addr), timeout, md, req))
	for {
		select {
		case <-expired:
			b.send(controlFrame(frameCancel, id))
			return status.Error(codes.DeadlineExceeded, context.DeadlineExceeded.Error())
		case <-ctx.Done():
			b.send(controlFrame(frameCancel, id))
			return status.FromContextError(ctx.Err()).Err()
		case <-b.gone:
			return status.Error(codes.Unavailable, "the sidecar stopped")
		case <-c.signal:
		}
		for _, f := range c.take() {
			switch f.kind {
			case frameMessage, frameUnary:
				if err := ss.SendMsg(&f.data); err != nil {
					b.send(controlFrame(frameCancel, id))
					return err
				}
				if f.kind == frameUnary {
					return nil
				}
			case frameStatus:
				if len(f.data) < 4 {
					return status.Error(codes.Internal, "the sidecar sent a malformed status")
				}
				code := codes.Code(binary.LittleEndian.Uint32(f.data[:4]))
				if code == codes.OK {
					return nil
				}
				return status.Error(code, string(f.data[4:]))
			}
		}
	}
}

type listenFlags []string

func (l *listenFlags) String() string     { return strings.Join(*l, ",") }
func (l *listenFlags) Set(v string) error { *l = append(*l, v); return nil }

func tlsCredentials(certFile, keyFile, clientCA string) (credentials.TransportCredentials, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key do not load: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCA != "" {
		pem, err := os.ReadFile(clientCA)
		if err != nil {
			return nil, fmt.Errorf("cannot read --tls-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-client-ca %s holds no PEM certificate", clientCA)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return credentials.NewTLS(cfg), nil
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "moorage-front: "+format+"\n", args...)
	os.Exit(2)
}

func main() {
	bridgeFd := flag.Int("bridge-fd", -1, "the inherited stream socket to the sidecar")
	var listens listenFlags
	flag.Var(&listens, "listen", "FD or FD:tls, an inherited listening socket (repeatable)")
	maxRecv := flag.Int("max-recv-bytes", 4<<20, "largest request message accepted")
	maxSend := flag.Int("max-send-bytes", 256<<20, "largest response message sent")
	certFile := flag.String("tls-cert", "", "PEM certificate for the listeners marked :tls")
	keyFile := flag.String("tls-key", "", "PEM key of --tls-cert")
	clientCA := flag.String("tls-client-ca", "", "PEM CA bundle: require client certificates it signed")
	keepaliveSeconds := flag.Float64("keepalive-seconds", 10, "ping each connection this often, close it if unanswered as long again (0: never)")
	flag.Parse()
	if os.Getenv("GOMAXPROCS") == "" {
		// One P: the front waits on sockets; handing a call between its goroutines on one thread is a switch,
		// on several it is a futex wake-up. Measured on bare echoes: about a third less CPU per call.
		runtime.GOMAXPROCS(1)
	}
	if *bridgeFd < 0 || len(listens) == 0 {
		fail("needs --bridge-fd and at least one --listen; it is started by `moorage sidecar`, not by hand")
	}
	// The sidecar decides when to stop (it drains, then closes the bridge): a terminal's Ctrl-C or a group's
	// SIGTERM reaches both processes, and the front must outlive the sidecar's drain, not cut it short.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)

	conn, err := net.FileConn(os.NewFile(uintptr(*bridgeFd), "bridge"))
	if err != nil {
		fail("--bridge-fd %d is not a socket: %v", *bridgeFd, err)
	}
	b := newBridge(conn)
	options := []grpc.ServerOption{
		grpc.ForceServerCodec(rawCodec{}),
		grpc.UnknownServiceHandler(b.handle),
		grpc.MaxRecvMsgSize(*maxRecv),
		grpc.MaxSendMsgSize(*maxSend),
		// Fixed windows: grpc-go's default dynamic window probes the bandwidth with a PING per burst of data,
		// which every client answers (grpc.aio and the sync server do not probe).
		grpc.InitialWindowSize(16 << 20),
		grpc.InitialConnWindowSize(16 << 20),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	if *keepaliveSeconds > 0 { // see moorage.connection.KEEPALIVE_SECONDS: a peer cut off, not closed, is found
		every := time.Duration(*keepaliveSeconds * float64(time.Second))
		options = append(options, grpc.KeepaliveParams(keepalive.ServerParameters{Time: every, Timeout: every}))
	}
	var secure credentials.TransportCredentials
	type served struct {
		server   *grpc.Server
		listener net.Listener
	}
	var all []served
	for _, spec := range listens {
		fdText, mode, _ := strings.Cut(spec, ":")
		fd, err := strconv.Atoi(fdText)
		if err != nil || (mode != "" && mode != "tls") {
			fail("--listen %q: expected FD or FD:tls", spec)
		}
		ln, err := net.FileListener(os.NewFile(uintptr(fd), "listener"))
		if err != nil {
			fail("--listen %d is not a listening socket: %v", fd, err)
		}
		opts := options
		if mode == "tls" {
			if secure == nil {
				if secure, err = tlsCredentials(*certFile, *keyFile, *clientCA); err != nil {
					fail("%v", err)
				}
			}
			opts = append(append([]grpc.ServerOption{}, options...), grpc.Creds(secure))
		}
		s := grpc.NewServer(opts...)
		b.servers = append(b.servers, s)
		all = append(all, served{s, ln})
	}
	go b.writeLoop()
	go b.readLoop()
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.server.Serve(s.listener) // returns on Stop/GracefulStop
		}()
	}
	wg.Wait()
	<-b.gone // stopped serving; the process ends when the sidecar closes the bridge (lost exits)
	time.Sleep(time.Second)
	os.Exit(0)
}
