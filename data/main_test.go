package data_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Load reads and tokenizes on goroutines of its own; none may outlive it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
