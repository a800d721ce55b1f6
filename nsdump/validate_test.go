package nsdump

import (
	"math"
	"strings"
	"testing"
)

func goodIPC() *IPC {
	return &IPC{
		Sysctls: IPCSysctls{
			ShmMax: 1 << 30, ShmAll: 1 << 20, ShmMni: 4096, MsgMax: 8192, MsgMnb: 16384, MsgMni: 32000,
			Sem:    [4]int64{32000, 1024000000, 500, 32000},
			Mqueue: &MqueueSysctls{QueuesMax: 256, MsgMax: 10, MsgsizeMax: 8192, MsgDefault: 10, MsgsizeDefault: 8192},
		},
		Shm: []ShmSegment{
			{IPCPerm: IPCPerm{ID: 0, Key: 0, Mode: 0o600}, Size: 8192, Chunks: []ShmChunk{{0, []byte{1}}, {4096, []byte{2, 3}}}},
			{IPCPerm: IPCPerm{ID: 32768, Key: 0, Mode: 0o600}, Size: 1},
			{IPCPerm: IPCPerm{ID: 1, Key: 0x10, Mode: 0o644, UID: 1000, GID: 1000}, Size: 100},
		},
		Sem: []SemSet{{IPCPerm: IPCPerm{ID: 0, Key: 0x10, Mode: 0o600}, Values: []uint16{0, 32767}}},
		Msg: []MsgQueue{{IPCPerm: IPCPerm{ID: 0, Key: 0x10, Mode: 0o600}, Qbytes: 16384,
			Messages: []Msg{{Type: 1, Data: []byte("x")}, {Type: math.MaxInt64, Data: nil}}}},
	}
}

func TestIPCValidate(t *testing.T) {
	if err := goodIPC().Validate(); err != nil {
		t.Fatalf("good state rejected: %v", err)
	}
	if err := (&IPC{}).Validate(); err != nil {
		t.Fatalf("empty state (no mqueue, all limits 0) rejected: %v", err)
	}
	var nilIPC *IPC
	if err := nilIPC.Validate(); err == nil {
		t.Fatal("nil state accepted")
	}
	cases := []struct {
		name string
		mut  func(st *IPC)
		want string
	}{
		{"negative id", func(st *IPC) { st.Shm[0].ID = -1 }, "shm id -1 key 0x0: bad id"},
		{"huge id", func(st *IPC) { st.Sem[0].ID = math.MaxInt32 + 1 }, "bad id"},
		{"duplicate shm id", func(st *IPC) { st.Shm[1].ID = 0 }, "shm id 0 key 0x0: duplicate id"},
		{"duplicate key", func(st *IPC) { st.Shm[1].Key = 0x10; st.Shm[1].ID = 5 }, "duplicate key"},
		{"mode bits", func(st *IPC) { st.Msg[0].Mode = 0o1600 }, "beyond 0777"},
		{"uid -1", func(st *IPC) { st.Shm[2].UID = math.MaxUint32 }, "uid/gid -1"},
		{"cgid -1", func(st *IPC) { st.Sem[0].CGID = math.MaxUint32 }, "uid/gid -1"},
		{"shm size 0", func(st *IPC) { st.Shm[1].Size = 0 }, "size 0"},
		{"shm too big", func(st *IPC) { st.Shm[1].Size = MaxShmSize + 1 }, "size"},
		{"chunk beyond size", func(st *IPC) { st.Shm[2].Chunks = []ShmChunk{{99, []byte{1, 2}}} }, "beyond size"},
		{"chunk offset overflow", func(st *IPC) { st.Shm[2].Chunks = []ShmChunk{{math.MaxUint64, []byte{1}}} }, "beyond size"},
		{"chunks overlap", func(st *IPC) { st.Shm[0].Chunks[1].Offset = 0 }, "overlaps or out of order"},
		{"chunks unsorted", func(st *IPC) {
			c := st.Shm[0].Chunks
			c[0], c[1] = c[1], c[0]
		}, "overlaps or out of order"},
		{"empty chunk", func(st *IPC) { st.Shm[0].Chunks[0].Data = nil }, "empty"},
		{"no semaphores", func(st *IPC) { st.Sem[0].Values = nil }, "0 semaphores"},
		{"too many semaphores", func(st *IPC) { st.Sem[0].Values = make([]uint16, MaxSemsPerSet+1) }, "semaphores"},
		{"semaphore value", func(st *IPC) { st.Sem[0].Values[1] = 32768 }, "semaphore 1: value 32768"},
		{"message type 0", func(st *IPC) { st.Msg[0].Messages[0].Type = 0 }, "msg id 0 key 0x10: message 0: type 0"},
		{"message type negative", func(st *IPC) { st.Msg[0].Messages[1].Type = -5 }, "type -5"},
		{"qbytes", func(st *IPC) { st.Msg[0].Qbytes = math.MaxInt32 + 1 }, "qbytes"},
		{"duplicate queue", func(st *IPC) { st.Msg = append(st.Msg, st.Msg[0]) }, "duplicate id"},
		{"shm_rmid_forced", func(st *IPC) { st.Sysctls.ShmRmidForced = 2 }, "shm_rmid_forced 2"},
		{"shmmni", func(st *IPC) { st.Sysctls.ShmMni = 1<<24 + 1 }, "shmmni"},
		{"msgmax negative", func(st *IPC) { st.Sysctls.MsgMax = -1 }, "msgmax"},
		{"semmni", func(st *IPC) { st.Sysctls.Sem[3] = -1 }, "semmni"},
		{"mqueue msg_max", func(st *IPC) { st.Sysctls.Mqueue.MsgMax = 0 }, "mqueue msg_max"},
		{"mqueue msgsize_max", func(st *IPC) { st.Sysctls.Mqueue.MsgsizeMax = 1 << 30 }, "mqueue msgsize_max"},
		{"too much data", func(st *IPC) {
			big := make([]byte, MaxIPCData/2+1)
			st.Shm[1].Size = uint64(len(big))
			st.Shm[1].Chunks = []ShmChunk{{0, big}}
			st.Msg[0].Messages[0].Data = big
		}, "exceed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := goodIPC()
			c.mut(st)
			err := st.Validate()
			if err == nil {
				t.Fatalf("accepted")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not contain %q", err, c.want)
			}
		})
	}
}

func TestUTSValidate(t *testing.T) {
	good := []UTS{{}, {Hostname: "h", Domainname: "(none)"}, {Hostname: strings.Repeat("a", 64)}}
	for _, u := range good {
		if err := u.Validate(); err != nil {
			t.Errorf("%+v rejected: %v", u, err)
		}
	}
	bad := []struct {
		u    UTS
		want string
	}{
		{UTS{Hostname: strings.Repeat("a", 65)}, "hostname"},
		{UTS{Domainname: strings.Repeat("a", 65)}, "domainname"},
		{UTS{Hostname: "a\x00b"}, "NUL"},
		{UTS{Domainname: "\x00"}, "NUL"},
	}
	for _, b := range bad {
		if err := b.u.Validate(); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%q: error %v, want %q", b.u, err, b.want)
		}
	}
	var nilUTS *UTS
	if nilUTS.Validate() == nil {
		t.Error("nil UTS accepted")
	}
}
