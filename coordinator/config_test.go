package coordinator

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		modify  func(*Config)
		wantErr string
	}{
		{"valid", func(*Config) {}, ""},
		{"checkpoints off", func(c *Config) { c.CheckpointInterval = 0 }, ""},
		{"zero seed", func(c *Config) { c.Seed = 0 }, ""},
		{"missing job id", func(c *Config) { c.JobID = "" }, "JobID is missing"},
		{"long job id", func(c *Config) { c.JobID = string(make([]byte, 129)) }, "JobID is 129 bytes, at most 128 allowed"},
		{"zero world size", func(c *Config) { c.WorldSize = 0 }, "WorldSize is 0, must be at least 1"},
		{"zero join timeout", func(c *Config) { c.JoinTimeout = 0 }, "JoinTimeout is 0s, must be positive"},
		{"negative checkpoint interval", func(c *Config) { c.CheckpointInterval = -1 }, "CheckpointInterval is -1"},
		{"zero total steps", func(c *Config) { c.TotalSteps = 0 }, "TotalSteps is 0, must be at least 1"},
		{"negative finish timeout", func(c *Config) { c.FinishTimeout = -time.Second }, "FinishTimeout is -1s, must be 0 (the default) or positive"},
		{"missing binary version", func(c *Config) { c.Fingerprint.BinaryVersion = "" }, "Fingerprint binary version is missing"},
		{"missing config hash", func(c *Config) { c.Fingerprint.ConfigHash = "" }, "Fingerprint resolved-config hash is missing"},
		{"missing model hash", func(c *Config) { c.Fingerprint.ModelHash = "" }, "Fingerprint model hash is missing"},
		{"missing dataset hash", func(c *Config) { c.Fingerprint.DatasetHash = "" }, "Fingerprint dataset hash is missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(3)
			tt.modify(&cfg)

			err := cfg.Validate()
			_, newErr := New(cfg, testStart)

			if tt.wantErr == "" {
				require.NoError(t, err)
				require.NoError(t, newErr)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
			assert.Equal(t, err, newErr, "New must reject the config like Validate")
		})
	}
}
