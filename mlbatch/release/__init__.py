"""The release flow: containers, code bundle, VM image bake, image tests, manifest."""
