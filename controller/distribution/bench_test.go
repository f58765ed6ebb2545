package distribution

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
	"github.com/warrenmesh/warren/controller/ca"
	"github.com/warrenmesh/warren/controller/model"
	"github.com/warrenmesh/warren/internal/enrollment"
)

// BenchmarkPush is the benchmark in one process, over loopback: 100
// subscribers (one per node), 10k enrolled pods, 1k services. It reports the
// time until every subscriber has acked its snapshot (and the median
// subscriber's, snapshot-p50-ms: all connect at once), and then, per
// iteration, a pod change until every subscriber acked it (p99 over
// iterations as p99-ms; the time includes model.Build, the controller's
// reconcile), and the process's CPU time per change as cpu-ms/op (the
// clients' included), which a busy machine disturbs less than latency. heap-MB is the live heap after the snapshots (everything in
// the process: the inputs, which stand for the controller's informer cache
// and are inputs-heap-MB alone, the model, the server's state, and the
// in-process clients' connections).
func BenchmarkPush(b *testing.B) {
	const nodes, pods, services = 100, 10000, 1000
	bigAuthn := staticAuthn{}
	for n := range nodes {
		bigAuthn[fmt.Sprintf("n%d", n)] = ca.Caller{Namespace: "warren-system", ServiceAccount: "ztunnel", Pod: "zt", Node: fmt.Sprintf("n%d", n)}
	}
	in := model.Inputs{Namespaces: []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{enrollment.Label: enrollment.Enabled}}}}}
	for i := range pods {
		in.Pods = append(in.Pods, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: fmt.Sprintf("p%d", i), UID: types.UID(fmt.Sprintf("u%d", i))},
			Spec:   corev1.PodSpec{NodeName: fmt.Sprintf("n%d", i%nodes), ServiceAccountName: fmt.Sprintf("sa%d", i%50)},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: fmt.Sprintf("10.%d.%d.%d", 1+i/65536, i/256%256, i%256)}}}})
	}
	for s := range services {
		in.Services = append(in.Services, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: fmt.Sprintf("s%d", s)},
			Spec: corev1.ServiceSpec{ClusterIPs: []string{fmt.Sprintf("10.96.%d.%d", s/256, s%256)}, Ports: []corev1.ServicePort{{Port: 80}}}})
	}

	heapMB := func() float64 {
		runtime.GC()
		runtime.GC() // and what sync.Pools held
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return float64(ms.HeapAlloc) / (1 << 20)
	}
	inputsHeap := heapMB()

	srv, err := New(Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Authn: bigAuthn, Callers: []string{"warren-system/ztunnel"}})
	if err != nil {
		b.Fatal(err)
	}
	// Loopback TCP, as in production (less TLS): an in-memory bufconn
	// would put megabytes of pipe buffers per connection on the heap.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer()
	meshv1.RegisterDistributionServer(gs, srv)
	go gs.Serve(lis)
	defer gs.Stop()
	srv.Publish(model.Build(in))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	acked := make(chan uint64, nodes*4)
	start := time.Now()
	var wg sync.WaitGroup
	firstAck := make([]time.Duration, nodes) // per subscriber, since start
	for n := range nodes {
		cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Close()
		node := fmt.Sprintf("n%d", n)
		st, err := meshv1.NewDistributionClient(cc).Subscribe(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+node))
		if err != nil {
			b.Fatal(err)
		}
		_ = st.Send(&meshv1.SubscribeRequest{Kind: &meshv1.SubscribeRequest_Hello{Hello: &meshv1.Hello{Node: node}}})
		wg.Add(1)
		go func() {
			defer wg.Done()
			first := false
			for {
				u, err := st.Recv()
				if err != nil {
					return
				}
				if st.Send(&meshv1.SubscribeRequest{Kind: &meshv1.SubscribeRequest_Ack{Ack: &meshv1.Ack{Version: u.Version}}}) != nil {
					return
				}
				if !first {
					first, firstAck[n] = true, time.Since(start)
				}
				acked <- u.Version
			}
		}()
	}
	waitAll := func(version uint64) {
		for got := 0; got < nodes; {
			if v := <-acked; v >= version {
				got++
			}
		}
	}
	waitAll(1)
	snapshots := time.Since(start)
	firstAck = slices.Sorted(slices.Values(firstAck)) // each written before its ack went to the channel
	heap := heapMB()

	var lat []time.Duration
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		p := in.Pods[i%pods].DeepCopy()
		p.Status.PodIPs = []corev1.PodIP{{IP: fmt.Sprintf("10.200.%d.%d", i/256%256, i%256)}}
		in.Pods[i%pods] = p
		t0 := time.Now()
		srv.Publish(model.Build(in))
		_, version, _ := srv.current()
		waitAll(version)
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(snapshots.Milliseconds()), "all-snapshots-ms")
	b.ReportMetric(float64(firstAck[nodes/2].Milliseconds()), "snapshot-p50-ms")
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(len(lat)), "cpu-ms/op")
	b.ReportMetric(heap, "heap-MB")
	b.ReportMetric(inputsHeap, "inputs-heap-MB")
	cancel()
	gs.Stop()
	wg.Wait()
}

// cpuTime is the CPU time of the process so far: on a busy machine, the
// cost of a change that wall-clock latency does not show reliably.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
