"""The shared core: pure numpy (OpenCV through `edgeseg.optional` for a few steps), imports
nothing of edgeseg but `errors` and `optional`. See ARCHITECTURE.md."""
