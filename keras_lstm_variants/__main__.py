from keras_lstm_variants_launcher import main

raise SystemExit(main())
