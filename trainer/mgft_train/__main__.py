from mgft_train.main import main

raise SystemExit(main())
