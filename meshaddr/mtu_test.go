package meshaddr

import "testing"

func TestTunnelMTU(t *testing.T) {
	for _, tc := range []struct {
		underlay, want int
		wantErr        bool
	}{
		{underlay: 1280, want: 1156},
		{underlay: 1400, want: 1276},
		{underlay: 1420, want: 1296},
		{underlay: 1500, want: 1376},
		{underlay: 9000, want: 1376},
		{underlay: 1279, want: 1156, wantErr: true},
		{underlay: 576, want: 1156, wantErr: true},
		{underlay: 0, want: 1156, wantErr: true},
	} {
		got, err := TunnelMTU(tc.underlay)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("TunnelMTU(%d) = %d, %v; want %d, error %v", tc.underlay, got, err, tc.want, tc.wantErr)
		}
		if got < MinTunnelMTU || got > MaxTunnelMTU {
			t.Errorf("TunnelMTU(%d) = %d, outside %d..%d", tc.underlay, got, MinTunnelMTU, MaxTunnelMTU)
		}
	}
}

func TestPlanConstants(t *testing.T) {
	if MaxTunnelMTU != 1376 || MinTunnelMTU != 1156 || MaxUDPPayload != 1128 {
		t.Errorf("MaxTunnelMTU %d, MinTunnelMTU %d, MaxUDPPayload %d; want 1376, 1156, 1128", MaxTunnelMTU, MinTunnelMTU, MaxUDPPayload)
	}
	// A full-size tunnel packet, encrypted and relayed, fits the smallest
	// in-spec underlay over IPv6.
	if MinTunnelMTU+WireGuardOverhead+RelayOverhead > MinUnderlayMTU {
		t.Error("a relayed full-size packet does not fit the minimum underlay")
	}
}
