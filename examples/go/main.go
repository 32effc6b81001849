// A net/http server for graceful-run: it takes its listener from fd 3, says READY=1, and on
// TERM or INT stops accepting and finishes the requests in flight (http.Server.Shutdown).
//
//	go build -o server . && graceful-run -l 8080 --ready notify -- ./server
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	// fd 3 is graceful-run's listening socket (LISTEN_FDS=1). Go's runtime makes it
	// non-blocking; every generation of this server copes with that, so leave it so.
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		log.Fatalf("no listening socket on fd 3 (run me under graceful-run -l PORT): %v", err)
	}
	pid := strconv.Itoa(os.Getpid())
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pid", pid)
		fmt.Fprintf(w, "hello from pid %s\n", pid)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		time.Sleep(time.Duration(ms) * time.Millisecond)
		w.Header().Set("X-Pid", pid)
		fmt.Fprintf(w, "slow response from pid %s after %d ms\n", pid, ms)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	// Catch the stop signals before saying READY=1: from then on a TERM can come at any time.
	quit := make(chan os.Signal, 1)
	signal.Notify(quit, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Fatalf("serve: %v", err)
		}
	}()
	// The socket already listens: connections wait in its backlog until Serve accepts them.
	if err := sdNotify("READY=1"); err != nil {
		log.Printf("sd_notify: %v", err)
	}

	<-quit
	// Shutdown closes our listener fd (never shutdown(2): the next generation shares the
	// socket), closes idle keep-alive connections, and waits for active ones.
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Fatalf("shutdown: %v", err)
	}
}

// sdNotify sends state to $NOTIFY_SOCKET, if set. Go reads a leading '@' as Linux's abstract
// namespace, so "@name" and "/run/x.sock" both work as they are.
func sdNotify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
}
