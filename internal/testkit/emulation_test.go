package testkit

import (
	"slices"
	"testing"
	"time"
)

func TestEmulation(t *testing.T) {
	tests := []struct {
		emulator    string
		wantTimeout time.Duration
		wantArgs    []string
	}{
		{"", 5 * time.Second, []string{"/bin/x.test", "-test.run=^A$"}},
		{"qemu-arm-static", 50 * time.Second, []string{"qemu-arm-static", "/bin/x.test", "-test.run=^A$"}},
	}
	for _, tt := range tests {
		t.Run("emulator="+tt.emulator, func(t *testing.T) {
			t.Setenv(EmulatorEnv, tt.emulator)
			if got := Emulator(); got != tt.emulator {
				t.Errorf("Emulator() = %q, want %q", got, tt.emulator)
			}
			if got := Timeout(5 * time.Second); got != tt.wantTimeout {
				t.Errorf("Timeout(5s) = %v, want %v", got, tt.wantTimeout)
			}
			if got := BinaryCommand("/bin/x.test", "-test.run=^A$").Args; !slices.Equal(got, tt.wantArgs) {
				t.Errorf("BinaryCommand args = %q, want %q", got, tt.wantArgs)
			}
		})
	}
}
