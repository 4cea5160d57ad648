from alpaca_focuser.cli import main

raise SystemExit(main())
