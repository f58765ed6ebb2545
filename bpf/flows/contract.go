package flows

// StatNames name the slots of the flow_stats map, in the order of flows.c's
// enum flow_stat; the names are the enumerators', lower case, without their
// STAT_ prefix (a test in bpf/redirect holds them to the object's BTF).
var StatNames = [FlowsFlowStatSTAT_MAX]string{
	FlowsFlowStatSTAT_STARTED:   "started",
	FlowsFlowStatSTAT_ENDED:     "ended",
	FlowsFlowStatSTAT_DROPPED:   "dropped",
	FlowsFlowStatSTAT_UNTRACKED: "untracked",
}
