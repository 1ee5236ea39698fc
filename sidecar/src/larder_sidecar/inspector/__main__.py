from larder_sidecar.inspector.cli import main

main()
