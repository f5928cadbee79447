package checkpoint_test

import (
	"fmt"
	"log"
	"os"

	"github.com/ringtune/ringtune/checkpoint"
)

func Example() {
	dir, err := os.MkdirTemp("", "checkpoint-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// Save two tensors as transformers would: bfloat16 weights and a float32 norm.
	err = checkpoint.WriteModel(dir, []checkpoint.Tensor{
		{Name: "model.embed_tokens.weight", DType: checkpoint.BF16, Shape: []int{2, 3}, Data: checkpoint.FromFloat32([]float32{0.1, 0.2, 0.3, 1, 2, 3})},
		{Name: "model.norm.weight", DType: checkpoint.F32, Shape: []int{3}, Data: checkpoint.FromFloat32([]float32{1, 1, 1})},
	}, checkpoint.ModelOptions{})
	if err != nil {
		log.Fatal(err)
	}

	m, err := checkpoint.OpenModel(dir)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	for _, info := range m.Tensors() {
		fmt.Println(info.Name, info.DType, info.Shape)
	}
	embed := make([]float32, 6)
	if err := m.ReadFloat32("model.embed_tokens.weight", embed); err != nil {
		log.Fatal(err)
	}
	fmt.Println(embed)
	fmt.Println(m.ReadFloat32("lm_head.weight", embed) != nil)
	// Output:
	// model.norm.weight F32 [3]
	// model.embed_tokens.weight BF16 [2 3]
	// [0.100097656 0.20019531 0.30078125 1 2 3]
	// true
}
