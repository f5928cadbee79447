package data

import (
	"fmt"
	"math"
)

// SplitEval moves a seeded random subset of ceil(fraction·n) of the n examples to an eval
// set, the size rule of Hugging Face's train_test_split, computed with a 1e-9 tolerance so
// that 0.1·30 gives 3 and not 4. Both sets keep dataset order. The same examples, fraction
// and seed always select the same subset. Split before packing, so that no row mixes
// train and eval examples.
func SplitEval(examples []Example, fraction float64, seed uint64) (train, eval []Example, err error) {
	if !(fraction > 0 && fraction < 1) {
		return nil, nil, fmt.Errorf("invalid eval fraction %v; expected a number between 0 and 1, exclusive", fraction)
	}
	n := len(examples)
	evalCount := int(math.Ceil(fraction*float64(n) - 1e-9))
	if evalCount < 1 {
		return nil, nil, fmt.Errorf("eval fraction %v of %d examples selects no eval example; raise the fraction", fraction, n)
	}
	if evalCount >= n {
		return nil, nil, fmt.Errorf("eval fraction %v of %d examples leaves no example for training; lower the fraction or add examples", fraction, n)
	}

	inEval := make([]bool, n)
	for _, i := range newStream(seed, evalSplitStream).permutation(n)[:evalCount] {
		inEval[i] = true
	}
	train = make([]Example, 0, n-evalCount)
	eval = make([]Example, 0, evalCount)
	for i := range examples {
		if inEval[i] {
			eval = append(eval, examples[i])
		} else {
			train = append(train, examples[i])
		}
	}
	return train, eval, nil
}
